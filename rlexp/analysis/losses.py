"""`python -m rlexp losses RUN_DIR`: the book's step 3, reading a pixel run's loss curves.

Sparse pixel Push shows three phases (book ch9, step 3): a plateau where success is flat and the critic
loss FALLS (it fits "failure everywhere" -- a red flag, not progress), a breakout where success climbs
and both losses RISE (the critic now sees successes it cannot yet predict -- the green light), and
mastery where success is high, the critic loss falls again and the actor loss turns negative.

A PPO run logs other losses (SB3's train/policy_gradient_loss, train/value_loss, train/entropy_loss): its phases
are read from those. The final success is eval.json's (the book's deterministic evaluation) when the run has one;
the training success (rollout/success_rate, stochastic actions, smoothed) is shown beside it.
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

SUCCESS = "rollout/success_rate"
# The losses each kind of algorithm logs, as SB3 names them: name -> (tag, panel label).
OFF_POLICY = {"critic_loss": ("train/critic_loss", "critic loss"), "actor_loss": ("train/actor_loss", "actor loss")}
PPO = {
    "policy_gradient_loss": ("train/policy_gradient_loss", "policy gradient loss"),
    "value_loss": ("train/value_loss", "value loss"),
    "entropy_loss": ("train/entropy_loss", "entropy loss (-entropy)"),
}
TAGS = {"success": SUCCESS, **{k: t for k, (t, _) in (OFF_POLICY | PPO).items()}}
BREAKOUT, MASTERY = 0.10, 0.90  # success thresholds between the phases


def read_scalars(run_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{name: (steps, values)} for TAGS from every event file under run_dir (resumed runs concatenated)."""
    if not event_files(run_dir):
        raise ConfigError(f"no TensorBoard event files under {run_dir}")
    scalars = tb.read_scalars(run_dir, TAGS.values())
    out = {name: scalars[tag] for name, tag in TAGS.items()}
    if out["success"][0].size == 0:
        raise ConfigError(f"{run_dir}: no {SUCCESS} scalars (is this a goal-env run?)")
    return out


def loss_set(data: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, tuple[str, str]]:
    """The losses this run logged: PPO's when it has them and no critic loss, else the off-policy pair."""
    logged = {name for name, (steps, _) in data.items() if steps.size}
    return PPO if "critic_loss" not in logged and logged & set(PPO) else OFF_POLICY


def evaluated_success(run_dir: Path) -> tuple[float, int | None] | None:
    """(success rate, episodes) of the run's eval.json, the number `eval` and `report` show; None without one."""
    from rlexp import artifacts
    from rlexp.rundir import RunDir

    path = RunDir(run_dir).eval
    if not path.is_file():
        return None
    result = artifacts.read_json(path)
    return float(result["aggregate"]["success_rate"]), result.get("n_episodes")


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
        # a change of more than 10% of the start's size, either sign (entropy and actor losses are often negative)
        "trend": "rising" if end - start > 0.1 * abs(start) + 1e-9 else "falling" if start - end > 0.1 * abs(start)
        + 1e-9 else "flat",
    }


def signature(data: dict[str, tuple[np.ndarray, np.ndarray]], window: int = 10,
              evaluated: tuple[float, int | None] | None = None) -> dict[str, Any]:
    """Phase boundaries from smoothed success, and per phase the loss levels and trends of the losses the run
    logged (`loss_set`). `final_success` is eval.json's (`evaluated`) when given, else the smoothed training
    success, which `training_success_end` always holds."""
    losses = loss_set(data)
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
        for key in losses:
            steps, vals = data[key]
            # The critic loss starts rising shortly BEFORE success does; judge the plateau's trend on its
            # first 90% so that leading edge counts for the breakout, not against the plateau.
            end = lo + 0.9 * (hi - lo) if name == "plateau" and t_breakout is not None else hi
            entry[key] = _trend(steps, smooth(vals, window), lo, end) if steps.size else None
        phases.append(entry)
    return {
        "last_step": last,
        "losses": list(losses),
        "final_success": evaluated[0] if evaluated else float(success[-1]),
        "final_success_from": "eval.json" if evaluated else SUCCESS,
        "eval_episodes": evaluated[1] if evaluated else None,
        "training_success_end": float(success[-1]),
        "breakout_step": t_breakout,
        "mastery_step": t_mastery,
        "phases": phases,
        "reading": reading_ppo(phases) if losses is PPO else reading(phases),
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


def reading_ppo(phases: list[dict[str, Any]]) -> list[str]:
    """What a PPO run's losses say per phase: the value loss follows the returns the critic has to fit; the
    entropy loss is minus the policy's entropy, so it rises as the policy narrows."""
    lines = []
    for ph, what in zip(phases, ("success below 10%", "success rising", f"success >= {fmt.percent(MASTERY, 0)}"),
                        strict=True):
        if not ph["reached"]:
            if ph["phase"] == "breakout":
                lines.append("No breakout yet: success stays below 10%.")
            continue
        v, pg, ent = (ph.get(k) or {} for k in ("value_loss", "policy_gradient_loss", "entropy_loss"))
        narrowing = {"rising": " (the policy narrows)", "falling": " (the policy widens)"}.get(ent.get("trend"), "")
        lines.append(
            f"{ph['phase'].capitalize()} {ph['from_step']}-{ph['to_step']}: {what}; value loss "
            f"{v.get('trend', 'not logged')} (mean {_num(v.get('mean'))}), policy gradient loss mean "
            f"{_num(pg.get('mean'))}, entropy loss {ent.get('trend', 'not logged')}{narrowing}."
        )
    return lines


def plot(data: dict[str, tuple[np.ndarray, np.ndarray]], sig: dict[str, Any], out: Path, window: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("success", "success rate (%)")] + [(k, label) for k, (_, label) in loss_set(data).items()]
    fig, axes = plt.subplots(len(panels), 1, figsize=(8, 2.7 * len(panels)), sharex=True)
    for ax, (name, label) in zip(axes, panels, strict=True):
        steps, vals = data[name]
        scale = 100.0 if name == "success" else 1.0
        if steps.size:
            ax.plot(steps, scale * vals, alpha=0.3, color="C0", clip_on=name != "success")
            ax.plot(steps, scale * smooth(vals, window), color="C0", clip_on=name != "success")
        if name == "success":  # a percent axis ends at 100%
            ax.set_ylim(0, 100)
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
    """Report a run's three-phase loss signature (success and its losses: SAC's critic/actor, PPO's policy
    gradient/value/entropy) and plot it."""
    if args.window < 1:
        raise ConfigError(f"--window must be >= 1, got {args.window}")
    data = read_scalars(args.run_dir)
    sig = signature(data, args.window, evaluated_success(args.run_dir))
    png = plot(data, sig, args.plot or args.run_dir / "loss_signature.png", args.window)
    training = f"training success at the end {fmt.percent(sig['training_success_end'], 0)} ({SUCCESS}, smoothed)"
    if sig["final_success_from"] == "eval.json":
        episodes = f", {sig['eval_episodes']} episodes" if sig["eval_episodes"] else ""
        final = f"final success {fmt.percent(sig['final_success'], 0)} (eval.json{episodes}); {training}"
    else:
        final = f"no eval.json: {training}"
    print(f"{args.run_dir}: {sig['last_step']} steps, {final}")
    losses = loss_set(data)
    print("| phase | steps | success (start->end) | "
          + " | ".join(f"{label} (start->end, trend)" for _, label in losses.values()) + " |")
    print("|---|---|---|" + "---|" * len(losses))
    for ph in sig["phases"]:
        if not ph["reached"]:
            print(f"| {ph['phase']} | not reached | |" + " |" * len(losses))
            continue
        s = ph["success"] or {}
        cells = [ph[k] or {} for k in losses]
        print(
            f"| {ph['phase']} | {ph['from_step']}-{ph['to_step']} | {_num(s.get('start'))}->{_num(s.get('end'))} | "
            + " | ".join(f"{_num(c.get('start'))}->{_num(c.get('end'))} {c.get('trend', '')}".rstrip() for c in cells)
            + " |"
        )
    for line in sig["reading"]:
        print(line)
    print(f"plot: {png}")
    if args.json:
        from rlexp import artifacts

        artifacts.write_json(args.json, sig)
    return 0
