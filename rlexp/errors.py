"""The one exception users see: a bad config or input, reported before any expensive work."""

from collections.abc import Iterator
from contextlib import contextmanager


class ConfigError(ValueError):
    """Bad user input (config value, path, checkpoint). Printed as a one-line error, no traceback."""


@contextmanager
def unwrap_config_errors() -> Iterator[None]:
    """Hydra wraps exceptions raised by instantiated objects; surface our own ConfigError unwrapped."""
    try:
        yield
    except ConfigError:
        raise
    except Exception as exc:
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, ConfigError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


class CheckpointError(ConfigError):
    """A checkpoint that is incomplete, corrupted or does not match the config resuming it."""


class LeaseLost(RuntimeError):
    """Another process took over the run directory this one trains in (its heartbeat had stalled past the
    timeout): this one stops writing there."""

    def __init__(self, run_dir: object, holder: str) -> None:
        super().__init__(f"{run_dir} was taken over by {holder}; this process stops writing there")
        self.run_dir = run_dir
        self.holder = holder
