"""Exit codes of `python run.py`, one place for run.py and the launchers that read them."""

OK_EXIT = 0
FAILED_EXIT = 1  # the run failed (e.g. the env_anatomy reward check found mismatches)
CONFIG_ERROR_EXIT = 2  # bad input (ConfigError), reported before any training
INTERRUPTED_EXIT = 3  # training was stopped by a signal after writing a checkpoint; `resume=` continues it
BUSY_EXIT = 4  # a single (non-multirun) command found its run directory locked by another process
