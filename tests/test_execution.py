"""Threads and the other execution keys: a fixed default that does not follow the machine, `threads=auto` opting
into the allotted cores, what a run executed with recorded and compared on resume, and the docs listing exactly
the keys rlexp.config names."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rlexp.rundir import RunDir

from helpers import HER_TINY, ROOT, _env, assert_same_final, ok, read_json, rlexp_cli, run_py

TWO_CORES = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two cores to vary the mask")


def threads_under_masks(cases: list[tuple[set[int], tuple[str, ...]]]) -> list[int]:
    """torch's thread count after rlexp sets it for each composed config, in a process pinned to each mask in turn
    (one process: importing torch and rlexp once)."""
    code = ("import os, sys, torch, rlexp\n"
            "from rlexp.execution import set_threads\n"
            f"for cores, overrides in {[(sorted(c), list(o)) for c, o in cases]!r}:\n"
            "    os.sched_setaffinity(0, cores)\n"
            "    set_threads(rlexp.compose(*overrides).threads)\n"
            "    print(torch.get_num_threads())\n")
    env = {k: v for k, v in _env().items() if k not in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [int(x) for x in proc.stdout.split()[-len(cases):]]


@TWO_CORES
def test_default_threads_do_not_follow_the_affinity_mask() -> None:
    default, auto = (), ("threads=auto",)
    assert threads_under_masks([({0}, default), ({0, 1}, default), ({0}, auto), ({0, 1}, auto)]) == [1, 1, 1, 2]


def test_auto_takes_the_allotted_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from rlexp.execution import allotted_cores, torch_threads

    mask = len(os.sched_getaffinity(0))
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert allotted_cores() == mask and torch_threads("auto") == mask and torch_threads(1) == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert torch_threads("auto") == 1
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", str(mask + 7))
    assert torch_threads("auto") == mask, "never more than the affinity mask"


@pytest.mark.parametrize("value", ["0", "-1", "many", "1.5"])
def test_bad_threads_is_one_line(value: str) -> None:
    import rlexp
    from rlexp.errors import ConfigError
    from rlexp.spec import RunSpec

    with pytest.raises(ConfigError, match="threads must be a positive integer or auto"):
        RunSpec.of(rlexp.compose("+experiment=ch05_her_reach", f"threads={value}"))


def test_execution_keys_stay_out_of_the_hash_of_recorded_runs() -> None:
    """threads, device and fast are run-only; overlap is hashed only when true: hashes of existing runs hold."""
    import rlexp
    from rlexp.config import EXECUTION_KEYS, RUN_ONLY_KEYS, config_hash

    base = config_hash(rlexp.compose("+experiment=ch05_her_push"))
    for override in ("threads=auto", "threads=3", "device=cpu", "fast=false", "overlap=false"):
        assert config_hash(rlexp.compose("+experiment=ch05_her_push", override)) == base, override
    assert config_hash(rlexp.compose("+experiment=ch05_her_push", "overlap=true")) != base
    assert set(EXECUTION_KEYS) - set(RUN_ONLY_KEYS) == {"overlap"}


# ------------------------------------------------------------------ what the docs say each key changes
def _keys_after(text: str, name: str) -> list[list[str]]:
    """The backticked keys of each list that follows a mention of `rlexp.config.NAME`."""
    lists = re.findall(rf"`rlexp\.config\.{name}`\)?:\s*((?:`[\w.]+`(?:,?\s+(?:and\s+)?)?)+)", text)
    return [re.findall(r"`([\w.]+)`", found) for found in lists]


@pytest.mark.parametrize("doc", ["README.md", "docs/sweeps.md"])
def test_docs_list_exactly_the_execution_keys(doc: str) -> None:
    from rlexp.config import EXECUTION_KEYS

    lists = _keys_after((ROOT / doc).read_text(), "EXECUTION_KEYS")
    assert lists, f"{doc} does not list the execution keys after `rlexp.config.EXECUTION_KEYS`"
    for keys in lists:
        assert sorted(keys) == sorted(EXECUTION_KEYS), f"{doc}: {keys} vs {list(EXECUTION_KEYS)}"


def test_readme_overrides_table_marks_run_only_and_rounding_keys() -> None:
    """Each row of the README's overrides table says `run-only` exactly for rlexp.config.RUN_ONLY_KEYS and
    `float rounding` exactly for rlexp.config.EXECUTION_KEYS; every such key has a row."""
    from rlexp.config import EXECUTION_KEYS, RUN_ONLY_KEYS

    text = (ROOT / "README.md").read_text()
    table = text[text.index("### Overrides"):]
    table = table[: table.index("\n\n", table.index("| key |"))]
    seen = set()
    for row in table.splitlines()[3:]:
        first, *_rest = row.strip("|").split("|")
        keys = re.findall(r"`([\w.*]+)`", first)
        seen.update(keys)
        meaning = row.split("|")[-2]
        for key in keys:
            assert ("run-only" in meaning) == (key in RUN_ONLY_KEYS), row
            assert ("float rounding" in meaning) == (key in EXECUTION_KEYS), row
    assert set(RUN_ONLY_KEYS) <= seen and set(EXECUTION_KEYS) <= seen, set(RUN_ONLY_KEYS) - seen


# ------------------------------------------------------------------ recorded, compared on resume, shown by diff
ARGS = [*(a for a in HER_TINY if not a.startswith("checkpoint_freq=")), "total_steps=300", "checkpoint_freq=200",
        "device=cpu"]


def _pinned(cores: set[int]):  # noqa: ANN202
    return lambda: os.sched_setaffinity(0, cores)


@pytest.mark.slow
@TWO_CORES
def test_resume_on_another_core_count_stays_bitwise_and_other_threads_say_so(tmp_path: Path) -> None:
    """threads=1 (the default) recorded in meta and each unit; stopped on two cores, resumed pinned to one: no
    word and bitwise equal to the uninterrupted run. A fork with threads=2 says, in one line, that bitwise
    equality is lost; `rlexp diff` shows the threads the two runs executed with."""
    ref, run, fork = tmp_path / "ref", tmp_path / "run", tmp_path / "fork"
    ok(run_py(*ARGS, f"hydra.run.dir={ref}"))
    assert read_json(ref / "model.meta.json")["execution"] == {"threads": 1, "device": "cpu", "fast": False,
                                                               "overlap": False}
    stopped = run_py(*ARGS, f"hydra.run.dir={run}", env={"RLEXP_FAULT": "SIGTERM@250:step"})
    assert stopped.returncode == 3, stopped.stderr[-2000:]
    unit = RunDir(run).latest_checkpoint()
    assert read_json(unit.meta)["execution"]["threads"] == 1
    cmd = [sys.executable, str(ROOT / "run.py"), *ARGS, f"hydra.run.dir={run}"]
    env = {k: v for k, v in _env().items() if k != "OMP_NUM_THREADS"}
    resumed = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
                             preexec_fn=_pinned({0}))
    out = ok(resumed).stdout + resumed.stderr
    assert f"from step {unit.step}" in out and "bitwise" not in out, out[-3000:]
    assert_same_final(run, ref)
    forked = ok(run_py(f"resume={unit.zip}", "threads=2", f"hydra.run.dir={fork}"))
    lines = [x for x in (forked.stdout + forked.stderr).splitlines() if "bitwise" in x]
    assert len(lines) == 1 and "threads 1 -> 2" in lines[0], lines
    assert read_json(fork / "model.meta.json")["execution"]["threads"] == 2
    diff = ok(rlexp_cli("diff", str(ref), str(fork))).stdout.splitlines()
    assert "threads: 1 -> 2" in diff and "execution.threads: 1 -> 2" in diff, diff
