"""`python -m rlexp losses RUN_DIR`: the book's step 3, reading a pixel run's loss curves.

Sparse pixel Push shows three phases (book ch9, step 3): a plateau where success is flat and the critic
loss FALLS (it fits "failure everywhere" -- a red flag, not progress), a breakout where success climbs
and both losses RISE (the critic now sees successes it cannot yet predict -- the green light), and
mastery where success is high, the critic loss falls again and the actor loss turns negative.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from rlexp import fmt
from rlexp.analysis import tb
from rlexp.analysis.tb import event_files
from rlexp.errors import ConfigError

TAGS = {
    "success": "rollout/success_rate",
    "critic_loss": "train/critic_loss",
    "actor_loss": "train/actor_loss",
}
BREAKOUT, MASTERY = 0.10, 0.90  # success thresholds between the phases


def read_scalars(run_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (steps, values)} for TAGS from every event file under run_dir (resumed runs concatenated)."""
    if not event_files(run_dir):
        raise ConfigError(f"no TensorBoard event files under {run_dir}")
    scalars = tb.read_scalars(run_dir, TAGS.values())
    out = {name: scalars[tag] for name, tag in TAGS.items()}
    if out["success"][0].size == 0:
        raise ConfigError(f"{run_dir}: no {TAGS['success']} scalars (is this an off-policy goal-env run?)")
    return out


def smooth(values: np.ndarray, window: int) -> np.ndarray:
    if values.size == 0 or window <= 1:
        return values
    kernel = np.ones(min(window, values.size)) / min(window, values.size)
    padded = np.pad(values, (len(kernel) // 2, len(kernel) - 1 - len(kernel) // 2), mode="edge")
    return np.convolve(padded, kernel, mode="valid")


def _trend(steps: np.ndarray, values: np.ndarray, lo: float, hi: float) -> dict[str, Any] | None:
    mask = (steps >= lo) & (steps <= hi)
    if mask.sum() < 2:
        return None
    v = values[mask]
    third = max(1, len(v) // 3)
    start, end = float(v[:third].mean()), float(v[-third:].mean())
    return {
        "start": start,
        "end": end,
        "mean": float(v.mean()),
        "trend": "rising" if end > start * 1.1 + 1e-9 else "falling" if end < start * 0.9 - 1e-9 else "flat",
    }


def signature(data: dict[str, tuple[np.ndarray, np.ndarray]], window: int = 10) -> dict[str, Any]:
    """Phase boundaries from smoothed success, and per phase the loss levels and trends."""
    s_steps, s_vals = data["success"]
    success = smooth(s_vals, window)
    last = int(s_steps[-1])
    up = np.flatnonzero(success >= BREAKOUT)
    top = np.flatnonzero(success >= MASTERY)
    t_breakout = int(s_steps[up[0]]) if up.size else None
    t_mastery = int(s_steps[top[0]]) if top.size else None
    bounds = [
        ("plateau", 0, t_breakout if t_breakout is not None else last),
        ("breakout", t_breakout, t_mastery if t_mastery is not None else last),
        ("mastery", t_mastery, last),
    ]
    phases = []
    for name, lo, hi in bounds:
        if lo is None or (name == "mastery" and t_mastery is None):
            phases.append({"phase": name, "reached": False})
            continue
        entry: dict[str, Any] = {
            "phase": name,
            "reached": True,
            "from_step": int(lo),
            "to_step": int(hi),
            "success": _trend(s_steps, success, lo, hi),
        }
        for key in ("critic_loss", "actor_loss"):
            steps, vals = data[key]
            # The critic loss starts rising shortly BEFORE success does; judge the plateau's trend on its
            # first 90% so that leading edge counts for the breakout, not against the plateau.
            end = lo + 0.9 * (hi - lo) if name == "plateau" and t_breakout is not None else hi
            entry[key] = _trend(steps, smooth(vals, window), lo, end) if steps.size else None
        phases.append(entry)
    return {
        "last_step": last,
        "final_success": float(success[-1]),
        "breakout_step": t_breakout,
        "mastery_step": t_mastery,
        "phases": phases,
        "reading": reading(phases),
    }


def reading(phases: list[dict[str, Any]]) -> list[str]:
    """What the book would conclude from each phase's numbers."""
    lines = []
    p1, p2, p3 = phases
    c1 = p1.get("critic_loss") or {}
    if c1.get("trend") == "falling":
        lines.append(
            f"Phase 1 to step {p1['to_step']}: success flat, critic loss falling to {c1['end']:.3g} --"
            " the critic is fitting uniform failure (RED flag, not progress)."
        )
    else:
        lines.append(
            f"Phase 1 to step {p1['to_step']}: success flat; critic loss {c1.get('trend', 'not logged')}."
        )
    if not p2["reached"]:
        lines.append(
            "No breakout yet: keep training past the state budget before judging (book: ~2.2M for step 2); "
            "if it never breaks out, check routing=critic."
        )
    if p2["reached"]:
        c2 = p2.get("critic_loss") or {}
        a2 = p2.get("actor_loss") or {}
        verdict = (
            "GREEN: the critic now sees successes it cannot predict yet"
            if c2.get("trend") == "rising" or (c1 and c2 and c2.get("mean", 0) > c1.get("mean", 0))
            else "success rising without the loss rise"
        )
        lines.append(
            f"Phase 2 from step {p2['from_step']}: success rising, critic loss {c2.get('trend', '?')} "
            f"(mean {c2.get('mean', float('nan')):.3g}), actor loss mean {a2.get('mean', float('nan')):.3g}"
            f" -- {verdict}."
        )
    if p3["reached"]:
        c3 = p3.get("critic_loss") or {}
        a3 = p3.get("actor_loss") or {}
        lines.append(
            f"Phase 3 from step {p3['from_step']}: success >= {fmt.percent(MASTERY, 0)}, "
            f"critic loss {c3.get('trend', '?')}"
            f", actor loss mean {a3.get('mean', float('nan')):.3g}"
            + (
                " (negative: Q above the entropy cost, as the book expects)."
                if a3.get("mean", 0) < 0
                else "."
            )
        )
    return lines


def plot(data: dict[str, tuple[np.ndarray, np.ndarray]], sig: dict[str, Any], out: Path, window: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(8, 8), sharex=True)
    for ax, (name, label) in zip(
        axes,
        [("success", "success rate"), ("critic_loss", "critic loss"), ("actor_loss", "actor loss")],
        strict=True,
    ):
        steps, vals = data[name]
        if steps.size:
            ax.plot(steps, vals, alpha=0.3, color="C0")
            ax.plot(steps, smooth(vals, window), color="C0")
        for key, color in (("breakout_step", "C2"), ("mastery_step", "C3")):
            if sig[key] is not None:
                ax.axvline(sig[key], color=color, linestyle="--", linewidth=1)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel("environment steps")
    axes[0].set_title("Three-phase loss signature (dashed: breakout >= 10%, mastery >= 90%)")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _num(x: Any) -> str:
    return "-" if x is None else f"{x:.3g}"


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", type=Path, help="run directory (or any folder holding its TensorBoard events)")
    p.add_argument(
        "--window", type=int, default=10, help="moving-average window in logged points (default 10)"
    )
    p.add_argument("--plot", type=Path, default=None, help="PNG path (default: RUN_DIR/loss_signature.png)")
    p.add_argument("--json", type=Path, default=None, help="also write the signature as JSON here")


def run(args: argparse.Namespace) -> int:
    """Report a run's three-phase loss signature (success, critic loss, actor loss) and plot it."""
    if args.window < 1:
        raise ConfigError(f"--window must be >= 1, got {args.window}")
    data = read_scalars(args.run_dir)
    sig = signature(data, args.window)
    png = plot(data, sig, args.plot or args.run_dir / "loss_signature.png", args.window)
    print(f"{args.run_dir}: {sig['last_step']} steps, final success {fmt.percent(sig['final_success'], 0)}")
    print("| phase | steps | success (start->end) | critic loss (start->end, trend) | actor loss (mean) |")
    print("|---|---|---|---|---|")
    for ph in sig["phases"]:
        if not ph["reached"]:
            print(f"| {ph['phase']} | not reached | | | |")
            continue
        s, c, a = ph["success"] or {}, ph["critic_loss"] or {}, ph["actor_loss"] or {}
        print(
            f"| {ph['phase']} | {ph['from_step']}-{ph['to_step']} "
            f"| {_num(s.get('start'))}->{_num(s.get('end'))} "
            f"| {_num(c.get('start'))}->{_num(c.get('end'))} {c.get('trend', '')} | {_num(a.get('mean'))} |"
        )
    for line in sig["reading"]:
        print(line)
    print(f"plot: {png}")
    if args.json:
        from rlexp import artifacts

        artifacts.write_json(args.json, sig)
    return 0
