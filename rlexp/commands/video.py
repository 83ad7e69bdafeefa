"""`python -m rlexp video PATH`: record episodes of a trained policy."""

from __future__ import annotations

import argparse
from pathlib import Path

from rlexp.errors import ConfigError


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="run directory (uses its model.zip) or a checkpoint .zip")
    p.add_argument("--episodes", type=int, default=None, help="number of episodes (default 3, or as many as --seeds)")
    p.add_argument("--seeds", default=None, help="episode seeds (default 0..episodes-1)")
    p.add_argument("--gif", action="store_true", help="also write a half-resolution GIF")
    p.add_argument("--stochastic", action="store_true")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=480)
    p.add_argument("--out", type=Path, default=None, help="MP4 path (default: <run dir>/videos/<stem>.mp4)")
    p.add_argument("--device", default="auto")


def run(args: argparse.Namespace) -> int:
    """Record episodes of a trained policy to MP4 (and GIF)."""
    from rlexp.config import parse_seeds
    from rlexp.evaluate import load_model, load_run_config, resolve_checkpoint
    from rlexp.rundir import RunDir
    from rlexp.video import record, write

    if (args.episodes is not None and args.episodes <= 0) or args.fps <= 0 or args.width <= 0 or args.height <= 0:
        raise ConfigError("--episodes, --fps, --width and --height must be positive")
    seeds = parse_seeds(args.seeds, args.episodes if args.episodes or args.seeds else 3)
    zip_path = resolve_checkpoint(args.path)
    cfg = load_run_config(zip_path)
    model = load_model(zip_path, cfg, args.device)
    frames = record(model, cfg, seeds, not args.stochastic, args.width, args.height)
    out = args.out or RunDir.of_checkpoint_zip(zip_path).videos / (zip_path.name[: -len(".zip")] + ".mp4")
    for path in write(frames, out, args.fps, args.gif):
        print(f"wrote {path}")
    return 0
