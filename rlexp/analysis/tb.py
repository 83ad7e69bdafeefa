"""The one TensorBoard scalar reader (used by `plot` and `losses`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np


def event_files(root: Path) -> list[Path]:
    """Every events file at or below root, sorted (a resumed run appends a new file to its run folder)."""
    return sorted(root.rglob("events.out.tfevents.*")) if root.is_dir() else []


def read_scalars(root: Path, tags: Iterable[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{tag: (steps, values)} over every events file under root; a tag never logged gets empty arrays.

    Steps are int64 and sorted; where several files log the same step (a resumed run), the later file wins.
    Scalars stored as tensor summaries count too: runs resumed by rlexp before 2026-11-23 kept their history
    before the checkpoint in that form.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    tags = list(tags)
    points: dict[str, dict[int, float]] = {tag: {} for tag in tags}
    for events in event_files(root):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        logged = acc.Tags()
        as_tensors, as_scalars = set(logged.get("tensors", [])), set(logged.get("scalars", []))
        for tag in tags:
            if tag in as_tensors:
                points[tag].update({int(ev.step): float(make_ndarray(ev.tensor_proto).reshape(-1)[0])
                                    for ev in acc.Tensors(tag)})
            if tag in as_scalars:
                points[tag].update({int(ev.step): float(ev.value) for ev in acc.Scalars(tag)})
    out = {}
    for tag, series in points.items():
        steps = np.asarray(sorted(series), dtype=np.int64)
        out[tag] = (steps, np.asarray([series[int(s)] for s in steps], dtype=np.float64))
    return out
