"""`python -m rlexp eval|video`: commands on a trained run; each module exposes `add_args` and `run`."""
