"""`python -m rlexp SUBCOMMAND`: evaluate and film trained runs (the sweep tools add report/diff/plot)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from rlexp.errors import ConfigError

COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def command(name: str, add_args: Callable[[argparse.ArgumentParser], None]):  # noqa: ANN201
    def deco(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = (add_args, fn)
        fn.__cli_name__ = name  # type: ignore[attr-defined]
        return fn

    return deco


def _eval_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="run directory (uses its model.zip) or a checkpoint .zip")
    p.add_argument("--episodes", type=int, default=None, help="number of episodes (default 100, or as many as --seeds)")
    p.add_argument("--seeds", default=None, help="episode seeds: '0-99', '0,1,2' (default 0..episodes-1)")
    p.add_argument("--stochastic", action="store_true", help="sample actions (default: deterministic)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default: <checkpoint stem>.eval.json beside it)")
    p.add_argument("--device", default="auto")


@command("eval", _eval_args)
def cmd_eval(args: argparse.Namespace) -> int:
    """Evaluate a checkpoint with the book's protocol and write the eval JSON."""
    from rlexp import artifacts
    from rlexp.config import parse_seeds
    from rlexp.evaluate import evaluate, load_model, load_run_config, resolve_checkpoint

    if args.episodes is not None and args.episodes <= 0:
        raise ConfigError(f"--episodes must be positive, got {args.episodes}")
    seeds = parse_seeds(args.seeds, args.episodes if args.episodes or args.seeds else 100)
    zip_path = resolve_checkpoint(args.path)
    cfg = load_run_config(zip_path)
    model = load_model(zip_path, cfg, args.device)
    result = evaluate(model, cfg, seeds, not args.stochastic, checkpoint=zip_path, progress=sys.stderr.isatty())
    out = args.out or zip_path.parent / (zip_path.name[: -len(".zip")] + ".eval.json")
    artifacts.write_json(out, result)
    agg = result["aggregate"]
    dist = agg["final_distance_mean"]
    mode = "stochastic" if args.stochastic else "deterministic"
    print(f"{cfg.env.id} {result['algo']} {len(seeds)} episodes ({mode}):"
          f" success {agg['success_rate']:.0%}, return {agg['return_mean']:.2f} ± {agg['return_std']:.2f}"
          + (f", final distance {dist * 1000:.1f} mm" if dist is not None else "") + f" -> {out}")
    return 0


def _video_args(p: argparse.ArgumentParser) -> None:
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


@command("video", _video_args)
def cmd_video(args: argparse.Namespace) -> int:
    """Record episodes of a trained policy to MP4 (and GIF)."""
    from rlexp.config import parse_seeds
    from rlexp.evaluate import load_model, load_run_config, resolve_checkpoint
    from rlexp.video import record, write

    if (args.episodes is not None and args.episodes <= 0) or args.fps <= 0 or args.width <= 0 or args.height <= 0:
        raise ConfigError("--episodes, --fps, --width and --height must be positive")
    seeds = parse_seeds(args.seeds, args.episodes if args.episodes or args.seeds else 3)
    zip_path = resolve_checkpoint(args.path)
    cfg = load_run_config(zip_path)
    model = load_model(zip_path, cfg, args.device)
    frames = record(model, cfg, seeds, not args.stochastic, args.width, args.height)
    run_dir = zip_path.parent.parent if zip_path.parent.name == "checkpoints" else zip_path.parent
    out = args.out or run_dir / "videos" / (zip_path.name[: -len(".zip")] + ".mp4")
    for path in write(frames, out, args.fps, args.gif):
        print(f"wrote {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rlexp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (add_args, fn) in COMMANDS.items():
        p = sub.add_parser(name, help=(fn.__doc__ or "").strip().splitlines()[0], description=fn.__doc__)
        add_args(p)
        p.set_defaults(func=fn)
    return parser


def main(argv: list[str] | None = None) -> None:
    import rlexp  # noqa: F401  - rendering env vars

    _register_extras()
    logging.basicConfig(level=logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        sys.exit(args.func(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


def _register_extras() -> None:
    """Subcommands defined in other modules (report/diff/plot) register themselves on import."""
    import importlib

    for mod in ("rlexp.analysis", "rlexp.losses"):
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:
                raise
