"""Checkpoint size and save/load time: rlexp's checkpoint unit (replay as .npy arrays of the filled rows) side by
side with SB3's `save_replay_buffer` (a pickle of the whole preallocated buffer), for the book's HER Push buffer.

    python bench/checkpoint_io.py --write docs/results.md

Two fills of the 1M-transition buffer (ch05_her_push: 8 envs, buffer_size 1M): 3,000 transitions (a short run)
and full. Transitions are random arrays of the right shapes written straight into the buffer.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from docsection import write_section  # noqa: E402

import rlexp  # noqa: E402
from rlexp import artifacts  # noqa: E402
from rlexp.rundir import RunDir, meta_of  # noqa: E402
from rlexp.training import checkpoint, replay_io  # noqa: E402


def fill(buf, rows: int, rng: np.random.Generator) -> None:  # noqa: ANN001
    for name in ("observations", "next_observations"):
        for arr in getattr(buf, name).values():
            arr[:rows] = rng.standard_normal(arr[:rows].shape)
    buf.actions[:rows] = rng.uniform(-1, 1, buf.actions[:rows].shape)
    buf.rewards[:rows] = -1.0
    buf.ep_start[:rows] = (np.arange(rows)[:, None] // 50) * 50
    buf.ep_length[:rows] = 50
    buf.pos, buf.full = rows % buf.buffer_size, rows >= buf.buffer_size


def du(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def measure(transitions: int, tmp: Path) -> dict[str, float]:
    cfg = rlexp.compose("+experiment=ch05_her_push", "device=cpu")
    model = rlexp.build(cfg)
    buf = model.replay_buffer
    rows = transitions // buf.n_envs
    fill(buf, rows, np.random.default_rng(0))
    model.num_timesteps = transitions
    run = RunDir(tmp / f"run_{transitions}")
    ckpt = run.checkpoint(transitions)
    t = time.perf_counter()
    checkpoint.save(model, ckpt, lambda zip_path, extra: artifacts.write_json(meta_of(zip_path), extra))
    save_s = time.perf_counter() - t
    fresh = rlexp.build(cfg)
    t = time.perf_counter()
    restored = replay_io.read_replay(fresh.replay_buffer, ckpt.replay, transitions)
    load_s = time.perf_counter() - t
    assert restored == transitions and np.array_equal(fresh.replay_buffer.actions[:rows], buf.actions[:rows])
    pkl = tmp / f"replay_{transitions}.pkl"
    t = time.perf_counter()
    model.save_replay_buffer(pkl)
    pkl_save_s = time.perf_counter() - t
    t = time.perf_counter()
    fresh.load_replay_buffer(pkl)
    pkl_load_s = time.perf_counter() - t
    out = {"transitions": transitions, "unit_mb": sum(du(p) for p in ckpt.parts() if p.exists()) / 1e6,
           "replay_mb": du(ckpt.replay) / 1e6, "save_s": save_s, "load_s": load_s,
           "pkl_mb": du(pkl) / 1e6, "pkl_save_s": pkl_save_s, "pkl_load_s": pkl_load_s}
    for m in (model, fresh):
        m.get_env().close()
    shutil.rmtree(run.root)
    pkl.unlink()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fills", type=int, nargs="*", default=[3_000, 1_000_000])
    ap.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temp dir)")
    ap.add_argument("--write", type=Path, default=None)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(dir=args.dir))
    try:
        rows = [measure(n, tmp) for n in args.fills]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table = ["| transitions in buffer | checkpoint unit (MB) | of it replay (MB) | save (s) | replay load (s) "
             "| SB3 pickle (MB) | pickle save (s) | pickle load (s) |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['transitions']:,} | {r['unit_mb']:.1f} | {r['replay_mb']:.1f} | {r['save_s']:.2f} | "
                     f"{r['load_s']:.2f} | {r['pkl_mb']:.0f} | {r['pkl_save_s']:.2f} | {r['pkl_load_s']:.2f} |")
    body = ("`python bench/checkpoint_io.py` on this project's 2-core CPU VM (local disk), the book's HER Push "
            "replay buffer (ch05_her_push: 8 envs, buffer_size 1M, float64 observations as the env gives them). "
            "*Checkpoint unit*: model zip + state + replay arrays + meta, as a run writes it (save time includes "
            "sha256 of every part); *replay load*: verify and copy the arrays into a freshly built buffer. "
            "SB3's pickle of the same buffer, side by side, for comparison (rlexp no longer writes or reads it).\n\n"
            + "\n".join(table) + "\n")
    print(body)
    if args.write:
        write_section(args.write, "checkpoint_io", "Checkpoints: size and save/load time of the replay buffer", body)


if __name__ == "__main__":
    main()
