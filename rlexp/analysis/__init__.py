"""Sweep analysis behind `python -m rlexp report|diff|plot|plan|losses`, one command per module.

`runs` finds and groups run directories, `stats` holds the statistics, `tb` reads TensorBoard scalars,
`book` the book's reported results (rlexp/data/book_results.yaml, also quoted by a run's summary line);
`report`, `diff`, `plot`, `plan` and `losses` each expose `add_args(parser)` and `run(args) -> int`,
which `rlexp.cli` imports only when that command runs.
"""
