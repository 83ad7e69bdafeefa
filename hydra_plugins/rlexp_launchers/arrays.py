"""Splitting a sweep into SLURM job arrays the cluster accepts, with one parallelism limit over all of them.

SLURM refuses an array whose largest index is MaxArraySize or more (`scontrol show config`; 1001 by default,
often less on shared clusters), and submitit submits `map_array` as one array whatever its length (submitit
issue 1624). So the SLURM launcher submits a sweep as pieces of at most MaxArraySize jobs, each through
submitit's own `map_array`.

`array_parallelism` stays a limit on the whole sweep. Every piece is submitted at once (so `wait=false` returns
with every job id known, and `status` and a re-launch see the whole sweep), arranged in lanes: `lanes` pieces
run side by side, the parallelism is divided between them (each lane's throttle `%N`, the N summing to
`array_parallelism`), and a lane's next piece waits for the one before it (`--dependency=afterany:ARRAY`). The
division is fixed at submission and needs nothing alive on the login node, rather than a launcher that tops up
pieces as slots free up; the cost is the tail of a piece: its last tasks run while the lane's next piece waits,
so fewer than `array_parallelism` may run at once until they end. Lanes are as few as fill the parallelism
(pieces of MaxArraySize or more: one lane, pieces one after another).
"""

# No `from __future__ import annotations` here: Hydra's plugin scan executes this module without registering it in
# sys.modules, where dataclasses would look up string annotations.
import math
import re
import shutil
import subprocess
from dataclasses import dataclass

SLURM_DEFAULT_MAX_ARRAY_SIZE = 1001  # slurm.conf(5): MaxArraySize's default


@dataclass(frozen=True)
class Piece:
    """Jobs `start`..`stop`-1 of a sweep, submitted as one array with throttle `parallelism`; it waits for
    piece `after` (an index into the same list) to end, if set."""

    start: int
    stop: int
    parallelism: int
    after: int | None = None

    def __len__(self) -> int:
        return self.stop - self.start


def parse_max_array_size(text: str) -> int | None:
    """MaxArraySize from the output of `scontrol show config` ("MaxArraySize            = 1001")."""
    m = re.search(r"^\s*MaxArraySize\s*=\s*(\d+)", text, re.MULTILINE)
    return int(m.group(1)) if m else None


def cluster_max_array_size() -> int | None:
    """The cluster's MaxArraySize, or None where `scontrol show config` cannot tell (no scontrol, no controller)."""
    if not shutil.which("scontrol"):
        return None
    try:
        out = subprocess.run(["scontrol", "show", "config"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_max_array_size(out.stdout) if out.returncode == 0 else None


def split(n_jobs: int, max_array_size: int, parallelism: int) -> list[Piece]:
    """The pieces of a sweep of `n_jobs` jobs: each at most `max_array_size` jobs (indices 0..max_array_size-1;
    0, arrays disabled, gives one job per piece), sizes as equal as can be, and at most `parallelism` jobs
    running at once across all of them (see the module docstring)."""
    if n_jobs < 1:
        return []
    if max_array_size < 0 or parallelism < 1:
        raise ValueError(f"max_array_size must be >= 0 and array_parallelism >= 1, got {max_array_size} and "
                         f"{parallelism}")
    n_pieces = math.ceil(n_jobs / max(1, max_array_size))
    base, extra = divmod(n_jobs, n_pieces)
    sizes = [base + (i < extra) for i in range(n_pieces)]
    lanes = min(n_pieces, math.ceil(parallelism / sizes[0]))
    throttle = [parallelism // lanes + (i < parallelism % lanes) for i in range(lanes)]
    pieces, start = [], 0
    for i, size in enumerate(sizes):
        pieces.append(Piece(start, start + size, throttle[i % lanes], i - lanes if i >= lanes else None))
        start += size
    return pieces
