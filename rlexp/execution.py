"""How a run executes, as far as it changes float rounding: torch's thread count, the device, the fast path and
overlap (`rlexp.config.EXECUTION_KEYS`).

The thread count is fixed by default (`threads: 1`): torch splits a matrix product differently with another
number of threads, so a default that followed the machine would make a run's numbers depend on the node it
ran on, and a requeue onto a node with another core count could not resume bitwise. `threads=auto` opts into
the cores this process was allotted. Each run records what it executed with (`execution` in model.meta.json and
in every checkpoint unit); a resume whose values differ says, in one line, that it is no longer bitwise equal
to an uninterrupted run.
"""

from __future__ import annotations

import os
from typing import Any

AUTO = "auto"


def allotted_cores() -> int:
    """The cores this process may use: SLURM's `--cpus-per-task`, else OMP_NUM_THREADS (the local launcher's
    cpus_per_task), else the CPU affinity mask; never more than the mask."""
    mask = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    for var in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "")
        if value.isdigit() and int(value) > 0:
            return min(int(value), mask)
    return mask


def torch_threads(threads: Any) -> int | None:
    """The thread count a `threads` value asks for: an int as it is, `auto` the allotted cores, null (runs
    recorded before the fixed default) torch's own default."""
    if threads is None:
        return None
    return allotted_cores() if threads == AUTO else int(threads)


def set_threads(threads: Any) -> None:
    """Set torch's intra-op threads for this process from the `threads` key (before anything is built)."""
    n = torch_threads(threads)
    if n is not None:
        import torch

        torch.set_num_threads(n)


def record(cfg: Any, device: Any) -> dict[str, Any]:
    """What this process executes with (`execution` of a meta record)."""
    import torch

    from rlexp.fast import Speedups  # its reading of `fast` and `overlap`, defaults included

    speed = Speedups.of(cfg)
    return {"threads": torch.get_num_threads(), "device": str(device), "fast": speed.fast, "overlap": speed.overlap}


def recorded(meta: dict[str, Any]) -> dict[str, Any]:
    """A meta record's `execution`; for records written before it existed, what they did record (torch_threads,
    device, the config's fast and overlap). Unknown values are left out."""
    if isinstance(meta.get("execution"), dict):
        return dict(meta["execution"])
    config = meta.get("config") or {}
    found = {"threads": meta.get("torch_threads"), "device": meta.get("device"), "fast": config.get("fast"),
             "overlap": config.get("overlap", False)}
    return {k: v for k, v in found.items() if v is not None}


def changes(before: dict[str, Any], now: dict[str, Any]) -> str | None:
    """'threads 2 -> 1, fast true -> false' for the keys whose value differs, or None."""
    differ = [k for k in now if k in before and before[k] != now[k]]
    if not differ:
        return None
    show = lambda v: str(v).lower() if isinstance(v, bool) else str(v)  # noqa: E731
    return ", ".join(f"{k} {show(before[k])} -> {show(now[k])}" for k in differ)


def header_note(threads: Any) -> str:
    """What the header adds after the thread count."""
    if threads == AUTO:
        return f"threads=auto: the {allotted_cores()} allotted core(s); results depend on the node"
    if threads is None:
        return "torch's default, one per core; results depend on the node"
    return "fixed: results do not depend on the node's core count"
