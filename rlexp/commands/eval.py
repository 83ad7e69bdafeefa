"""`python -m rlexp eval PATH`: evaluate a checkpoint with the book's protocol."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rlexp.errors import ConfigError


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("path", help="run directory (uses its model.zip) or a checkpoint .zip")
    p.add_argument("--episodes", type=int, default=None, help="number of episodes (default 100, or as many as --seeds)")
    p.add_argument("--seeds", default=None, help="episode seeds: '0-99', '0,1,2' (default 0..episodes-1)")
    p.add_argument("--stochastic", action="store_true", help="sample actions (default: deterministic)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default: <checkpoint stem>.eval.json beside it)")
    p.add_argument("--device", default="auto")


def run(args: argparse.Namespace) -> int:
    """Evaluate a checkpoint with the book's protocol and write the eval JSON."""
    from rlexp import artifacts, fmt
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
          f" success {fmt.percent(agg['success_rate'], 0)}, return {agg['return_mean']:.2f} ± {agg['return_std']:.2f}"
          + (f", final distance {fmt.mm(dist)}" if dist is not None else "") + f" -> {out}")
    return 0
