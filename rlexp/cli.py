"""`python -m rlexp COMMAND`: evaluate and film trained runs, analyse sweeps."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from rlexp.errors import ConfigError
from rlexp.status import Exit

# name -> (module with add_args(parser) and run(args) -> int, one-line help). A module is imported only
# when its command runs, so `--help` stays fast and matplotlib/rliable/torch load only where needed.
COMMANDS: dict[str, tuple[str, str]] = {
    "eval": ("rlexp.commands.eval", "Evaluate a checkpoint with the book's protocol and write the eval JSON."),
    "video": ("rlexp.commands.video", "Record episodes of a trained policy to MP4 (and GIF)."),
    "report": (
        "rlexp.analysis.report",
        "Per-config statistics across seeds, factor effects and interactions of a sweep (Markdown/CSV/JSON).",
    ),
    "diff": (
        "rlexp.analysis.diff",
        "Print the config keys that differ between two runs or experiments: `key: A -> B`, nothing else.",
    ),
    "plot": (
        "rlexp.analysis.plot",
        "Learning curves (mean over seeds, 95%% bootstrap band) per config and a summary bar chart (PNG + PDF).",
    ),
    "plan": (
        "rlexp.analysis.plan",
        "Dry run of a multirun: one line per job (its run directory name), then the job count.",
    ),
    "status": (
        "rlexp.analysis.status",
        "Where every job of a sweep stands (done/running/interrupted/failed/pending), also while it runs.",
    ),
    "losses": (
        "rlexp.analysis.losses",
        "Report a run's three-phase loss signature (success, critic loss, actor loss) and plot it.",
    ),
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """Every command listed with its help; only the command named in argv gets its module and arguments."""
    parser = argparse.ArgumentParser(prog="python -m rlexp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((a for a in (sys.argv[1:] if argv is None else argv) if not a.startswith("-")), None)
    for name, (module, help_line) in COMMANDS.items():
        p = sub.add_parser(name, help=help_line, description=help_line.replace("%%", "%"))
        if name == chosen:
            mod = importlib.import_module(module)
            mod.add_args(p)
            p.description = mod.run.__doc__ or help_line
            p.set_defaults(func=mod.run)
    return parser


def main(argv: list[str] | None = None) -> None:
    import rlexp  # noqa: F401  - rendering env vars

    logging.basicConfig(level=logging.WARNING)
    args = build_parser(argv).parse_args(argv)
    try:
        sys.exit(args.func(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(Exit.BAD_INPUT)
