"""TensorBoard history of a run: one `tb/run_1` that a resumed run continues without repeated steps.

A run killed after its last checkpoint logged steps that the resumed run logs again; resuming first
rewrites the history to the events at or before the checkpoint's step (one new file, duplicates dropped).
The events are copied as SB3 wrote them (`simple_value` scalars): TensorBoard's loader would migrate them to
tensor summaries, which the scalar API of EventAccumulator (rlexp's readers, most users' scripts) skips.
"""

from __future__ import annotations

import shutil
from pathlib import Path

EVENTS_GLOB = "events.out.tfevents.*"


def _events(folder: Path) -> list:
    from tensorboard.backend.event_processing.event_file_loader import LegacyEventFileLoader

    events = []
    for path in sorted(folder.glob(EVENTS_GLOB)):
        try:
            events.extend(LegacyEventFileLoader(str(path)).Load())  # as written: no migration to tensors
        except Exception:  # noqa: BLE001 - a file cut by a kill ends early: keep what was read
            continue
    return events


def keep_until(source: Path, target: Path, step: int) -> int:
    """Write the scalar history of `source` up to `step` into `target` (which may be `source`).

    The new file goes in before the old ones are removed: a kill in between leaves duplicates, which the
    next call drops again. Returns the number of events kept.
    """
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    old_files = sorted(target.glob(EVENTS_GLOB)) if target.exists() else []
    seen: set[tuple[str, int]] = set()
    kept = []
    for event in _events(source) if source.exists() else []:
        if not event.HasField("summary") or event.step > step:
            continue
        tags = tuple(v.tag for v in event.summary.value)
        key = (",".join(tags), int(event.step))
        if key not in seen:
            seen.add(key)
            kept.append(event)
    target.mkdir(parents=True, exist_ok=True)
    staging = target / ".rewrite"
    shutil.rmtree(staging, ignore_errors=True)
    writer = EventFileWriter(str(staging), filename_suffix=".kept")
    for event in kept:
        writer.add_event(event)
    writer.close()
    for path in staging.glob(EVENTS_GLOB):
        path.replace(target / path.name)
    shutil.rmtree(staging, ignore_errors=True)
    for path in old_files:
        path.unlink(missing_ok=True)
    return len(kept)


def clear(target: Path) -> None:
    """A fresh run: events left by an earlier attempt that never checkpointed are not this run's."""
    if target.exists():
        shutil.rmtree(target)
