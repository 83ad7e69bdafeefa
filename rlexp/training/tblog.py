"""TensorBoard history of a run: one `tb/run_1` that a resumed run continues without repeated steps.

A run killed after its last checkpoint logged steps that the resumed run logs again; resuming first
rewrites the history to the events at or before the checkpoint's step (one new file, duplicates dropped).
The events are copied as SB3 wrote them (`simple_value` scalars): TensorBoard's loader would migrate them to
tensor summaries, which the scalar API of EventAccumulator (rlexp's readers, most users' scripts) skips.
A run writes its events through `EventsWriter` (a full disk delays events, never cuts one).
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
from stable_baselines3.common.logger import KVWriter

from rlexp.diskfull import Appender

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
        if not event.HasField("summary") or event.step > step or _hparams(event):
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


def _hparams(event: Any) -> bool:
    """A finished sweep job's HParams session (rlexp.training.hparams): a run continued from it is another session."""
    return any(v.metadata.plugin_data.plugin_name == "hparams" for v in event.summary.value)


def clear(target: Path) -> None:
    """A fresh run: events left by an earlier attempt that never checkpointed are not this run's."""
    if target.exists():
        shutil.rmtree(target)


class EventsWriter(KVWriter):
    """SB3's TensorBoard output for a run, safe on a full disk.

    Scalars become the events SB3's TensorBoardOutputFormat writes through torch's SummaryWriter (one
    `simple_value` event per key and dump, the file opened by a `file_version` event), but written by this
    process at each dump through rlexp.diskfull.Appender: a dump's records are appended whole or not at all,
    wait in memory on a full disk and follow once there is space. torch's writer appends from a background
    thread that dies on the first ENOSPC (every later write raises) and can leave half a record, after which
    readers see nothing more. Other kinds of values (text, histograms, images: neither SB3 nor rlexp logs
    them) go to SB3's own writer.
    """

    def __init__(self, folder: str | Path) -> None:
        from tensorboard.compat.proto.event_pb2 import Event, SourceMetadata

        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.out = Appender(self._new_file(), "TensorBoard events")
        self.others: KVWriter | None = None
        self.out.write(_record(Event(wall_time=time.time(), file_version="brain.Event:2",
                                     source_metadata=SourceMetadata(writer="rlexp"))))

    def _new_file(self) -> Path:
        """TensorBoard's file name, sorting after the files already there (readers take them in name order)."""
        existing = sorted(p.name for p in self.folder.glob(EVENTS_GLOB))
        stamp = int(time.time())
        while True:
            name = f"events.out.tfevents.{stamp:010d}.{socket.gethostname()}.{os.getpid()}.0"
            if not existing or name > existing[-1]:
                return self.folder / name
            stamp += 1

    def write(self, key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], step: int = 0) -> None:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        records, others, others_excluded = [], {}, {}
        for key, value in sorted(key_values.items()):
            excluded = key_excluded.get(key)
            if excluded is not None and "tensorboard" in excluded:
                continue
            if isinstance(value, np.ScalarType) and not isinstance(value, str | bytes):
                summary = Summary(value=[Summary.Value(tag=key, simple_value=float(value))])
                records.append(_record(Event(wall_time=time.time(), step=int(step), summary=summary)))
            else:
                others[key], others_excluded[key] = value, excluded
        if records:
            self.out.write(b"".join(records))
        if others:
            if self.others is None:
                from stable_baselines3.common.logger import TensorBoardOutputFormat

                self.others = TensorBoardOutputFormat(str(self.folder))
            self.others.write(others, others_excluded, step)

    def close(self) -> None:
        self.out.close()
        if self.others is not None:
            self.others.close()


def _record(event: Any) -> bytes:
    """One TFRecord (length, its masked CRC, the serialized event, its masked CRC), by TensorBoard's own writer."""
    import io

    from tensorboard.summary.writer.record_writer import RecordWriter

    buf = io.BytesIO()
    RecordWriter(buf).write(event.SerializeToString())
    return buf.getvalue()
