"""Sweep analysis behind `python -m rlexp report|diff|plot|plan|losses`, one command per module.

`runs` finds and groups run directories, `stats` holds the statistics, `tb` reads TensorBoard scalars;
`report`, `diff`, `plot`, `plan` and `losses` each expose `add_args(parser)` and `run(args) -> int`,
which `rlexp.cli` imports only when that command runs.
"""
