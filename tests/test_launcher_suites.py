"""Hydra's own launcher conformance suites (hydra.test_utils.launcher_common_tests), applied to our launchers
the way hydra-submitit-launcher's tests apply them to its own (plugins/hydra_submitit_launcher/tests).

LauncherTestSuite runs Hydra's test app in-process through each launcher; IntegrationTestSuite runs generated
apps as subprocesses. Selected for CI time (~40 s on 2 cores): `sequential` (rlexp's default) gets all of
LauncherTestSuite; `local` (a submitit subprocess per job, ~4 s a sweep) the tests that differ by launcher
(1 and 2 jobs, job number/id/name, per-job config merging, refused Hydra sweeps, a failing job). Both get one
case of each integration test (job name, sweep and job directories, original cwd, to_absolute_path for
`sequential`): the other cases vary the app's config, not the launcher. The SLURM launcher runs its share in
tests/test_slurm.py, where the local cluster is up. `hydra.sweep.mode` (octal permissions of the sweep dir,
honoured by Hydra's stock submitit launcher, not tested by Hydra 1.3.8's suites) is checked at the end.
"""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from hydra.test_utils.launcher_common_tests import IntegrationTestSuite, LauncherTestSuite

from helpers import ROOT


@pytest.fixture
def _suite_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """What Hydra's suites assume of the process they run in, whatever ran before them in this pytest session.

    Apps started in temp dirs must find this checkout's launchers (the editable install may point at another
    checkout). The in-process tests expect Hydra's compatibility defaults (the app's `version_base`
    unspecified: jobs chdir into their directory), but `version_base` is process-wide state that any earlier
    test composing rlexp's config (version_base="1.3") leaves set; Hydra runs each plugin's tests in its own
    process, where that cannot happen.
    """
    from hydra.core.singleton import Singleton
    from hydra.version import VersionBase

    parts = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), *parts]))
    # The local launcher bounds its jobs' threads with setdefault(OMP_NUM_THREADS) in the launching process, here
    # pytest's own: put it back afterwards (left set, it made tools/slurm_local.sh advertise one CPU).
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    saved = Singleton._instances.pop(VersionBase, None)  # type: ignore[attr-defined]
    yield
    Singleton._instances.pop(VersionBase, None)  # type: ignore[attr-defined]
    if saved is not None:
        Singleton._instances[VersionBase] = saved  # type: ignore[attr-defined]


pytestmark = pytest.mark.usefixtures("_suite_environment")


@pytest.mark.parametrize("launcher_name, overrides", [("sequential", [])])
class TestSequentialLauncher(LauncherTestSuite):
    pass


@pytest.mark.parametrize("launcher_name, overrides", [("local", ["hydra.launcher.timeout_min=2"])])
class TestLocalLauncher(LauncherTestSuite):
    # Left to `sequential` (same sweep handling; ~4 s per submitit round trip here): config-group sweeps,
    # a mandatory default filled by the sweep, the `strict` duplicate of test_sweep_1_job, custom resolvers.
    test_sweep_2_optimizers = None
    test_sweep_over_unspecified_mandatory_default = None
    test_sweep_1_job_strict = None
    test_sweep_with_custom_resolver = None


class _IntegrationSubset(IntegrationTestSuite):
    """One case of each parametrized integration test (job name overridden on the command line; sweep and
    job directories from the command line); the other cases vary the app's config, not the launcher."""

    @pytest.mark.parametrize(
        "task_config, overrides, filename, expected_name",
        [pytest.param(None, ["hydra.job.name=overridden_name"], "no_config.py", "overridden_name", id="name")],
    )
    def test_custom_task_name(self, tmpdir: Path, task_config: Any, overrides: list[str], filename: str,
                              expected_name: str, task_launcher_cfg: Any, extra_flags: list[str]) -> None:
        super().test_custom_task_name(tmpdir, task_config, overrides, filename, expected_name, task_launcher_cfg,
                                      extra_flags)

    @pytest.mark.parametrize(
        "task_config, overrides, expected_dir",
        [pytest.param({}, ["hydra.sweep.dir=cli_dir", "hydra.sweep.subdir=cli_dir_${hydra.job.num}"],
                      "cli_dir/cli_dir_0", id="sweep_dir_cli_override")],
    )
    def test_custom_sweeper_run_workdir(self, tmpdir: Path, task_config: Any, overrides: list[str],
                                        expected_dir: str, task_launcher_cfg: Any, extra_flags: list[str]) -> None:
        super().test_custom_sweeper_run_workdir(tmpdir, task_config, overrides, expected_dir, task_launcher_cfg,
                                                extra_flags)


FLAGS = ["-m", "hydra/hydra_logging=disabled", "hydra/job_logging=disabled"]


@pytest.mark.parametrize("task_launcher_cfg, extra_flags", [({}, [*FLAGS, "hydra/launcher=sequential"])])
class TestSequentialLauncherIntegration(_IntegrationSubset):
    pass


@pytest.mark.parametrize("task_launcher_cfg, extra_flags",
                         [({}, [*FLAGS, "hydra/launcher=local", "hydra.launcher.timeout_min=1"])])
class TestLocalLauncherIntegration(_IntegrationSubset):
    test_to_absolute_path_multirun = None  # two more submitit sweeps; covered by `sequential`


def test_local_launcher_runs_at_most_max_parallel_jobs_at_once(tmp_path: Path) -> None:
    """`hydra/launcher=local hydra.launcher.max_parallel=2`: three jobs, never more than two running at once and two
    at some moment (submitit's own start and exit lines in each job's log). Each job waits until two have started,
    so the first two overlap however slowly their interpreters start."""
    app = tmp_path / "app.py"
    app.write_text(f"""import pathlib, time
import hydra

@hydra.main(version_base=None, config_path=None)
def main(cfg):
    marks = pathlib.Path({str(tmp_path)!r})
    (marks / f"started_{{cfg.x}}").touch()
    end = time.time() + 60
    while len(list(marks.glob("started_*"))) < 2 and time.time() < end:
        time.sleep(0.05)
    time.sleep(0.5)
    return 1

if __name__ == "__main__":
    main()
""")
    sweep = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, str(app), "-m", "hydra/launcher=local", "hydra.launcher.max_parallel=2",
                           "+x=1,2,3", f"hydra.sweep.dir={sweep}"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]
    stamp = re.compile(r"submitit INFO \((\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+)\) - (Starting with|Exiting after)")
    events = []
    for log in (sweep / ".submitit").rglob("*_log.out"):
        for when, what in stamp.findall(log.read_text()):
            events.append((datetime.strptime(when, "%Y-%m-%d %H:%M:%S,%f"), what.startswith("Exiting")))
    assert len(events) == 6, events  # 3 starts, 3 ends
    running = peak = 0
    for _, is_end in sorted(events, key=lambda e: (e[0], not e[1])):  # on a tie, an exit before a start
        running += -1 if is_end else 1
        peak = max(peak, running)
    assert peak == 2, "max_parallel=2 should run two jobs at once, never more"


def test_sweep_mode_sets_sweep_dir_permissions(tmp_path: Path) -> None:
    """`+hydra.sweep.mode=750` (octal) gives the sweep directory those permissions, as Hydra's stock submitit
    launcher does (ours ignored it); each job gets its line, and no empty `.submitit/%j` folder is left."""
    app = tmp_path / "app.py"
    app.write_text("import hydra\n\n@hydra.main(version_base=None, config_path=None)\n"
                   "def main(cfg):\n    return 1\n\nif __name__ == '__main__':\n    main()\n")
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, str(app), "-m", "hydra/launcher=local", "+x=1,2", f"hydra.sweep.dir={sweep}",
         "+hydra.sweep.mode=750"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env=dict(os.environ),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert stat.S_IMODE(sweep.stat().st_mode) == 0o750
    assert "[2/2]" in proc.stdout and "done" in proc.stdout, proc.stdout
    assert not (sweep / ".submitit" / "%j").exists(), "no stray folder named after the unexpanded pattern"
