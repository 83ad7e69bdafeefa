"""How the SLURM launcher splits a sweep into arrays within MaxArraySize (hydra_plugins/rlexp_launchers/arrays.py),
without a cluster (milliseconds). The real submission of a 4-job sweep on a cluster with MaxArraySize 3 is in
test_slurm.py."""

from __future__ import annotations

import itertools
import re

import pytest

from hydra_plugins.rlexp_launchers.arrays import Piece, parse_max_array_size, split


def most_running(pieces: list[Piece]) -> int:
    """The most jobs that can run at once: pieces not waiting on each other run side by side, each up to its
    throttle. A piece waits for its `after`, so of one lane's chain only one piece runs at a time."""
    lanes: dict[int, int] = {}
    for i, p in enumerate(pieces):
        root = i
        while pieces[root].after is not None:
            root = pieces[root].after  # type: ignore[assignment]
        lanes[root] = max(lanes.get(root, 0), min(len(p), p.parallelism))
    return sum(lanes.values())


@pytest.mark.parametrize("n, limit, parallelism", [
    *itertools.product((1, 9, 10, 11, 24, 100, 2001), (0, 1, 10, 1001), (1, 2, 7, 32, 256)),
])
def test_pieces_cover_the_sweep_within_the_limits(n: int, limit: int, parallelism: int) -> None:
    pieces = split(n, limit, parallelism)
    assert [p.start for p in pieces] == [0, *[p.stop for p in pieces[:-1]]] and pieces[-1].stop == n  # in order
    assert all(1 <= len(p) <= max(1, limit) for p in pieces)  # indices 0..MaxArraySize-1; 0: no arrays
    assert max(len(p) for p in pieces) - min(len(p) for p in pieces) <= 1
    assert all(p.after is None or p.after < i for i, p in enumerate(pieces))  # waits only on earlier pieces
    assert most_running(pieces) <= parallelism
    # and the parallelism is used: as many run at once as the limit allows while the first pieces run
    assert most_running(pieces) == min(parallelism, sum(len(p) for p in pieces if p.after is None))


def test_24_jobs_with_max_array_size_10() -> None:
    assert split(24, 10, 2) == [Piece(0, 8, 2), Piece(8, 16, 2, after=0), Piece(16, 24, 2, after=1)]
    assert split(24, 10, 32) == [Piece(0, 8, 11), Piece(8, 16, 11), Piece(16, 24, 10)]
    assert split(24, 10, 12) == [Piece(0, 8, 6), Piece(8, 16, 6), Piece(16, 24, 6, after=0)]
    assert split(2000, 1001, 32) == [Piece(0, 1000, 32), Piece(1000, 2000, 32, after=0)]
    assert split(3, 0, 2) == [Piece(0, 1, 1), Piece(1, 2, 1), Piece(2, 3, 1, after=0)]  # arrays disabled
    assert split(0, 10, 2) == []
    with pytest.raises(ValueError):
        split(5, 10, 0)


def test_max_array_size_from_scontrol_show_config() -> None:
    text = ("Configuration data as of 2026-12-07T05:50:01\nAccountingStorageBackupHost = (null)\n"
            "MaxArraySize            = 10\nMaxDBDMsgs              = 20012\n")
    assert parse_max_array_size(text) == 10
    assert parse_max_array_size("MaxJobCount = 10000\n") is None


def test_bad_max_array_size_is_refused_before_anything_is_written(tmp_path) -> None:  # noqa: ANN001
    """A count the launcher cannot use is one `error:` line and exit 2 before the sweep starts (no cluster needed:
    the check runs before the launcher is made)."""
    from helpers import PPO_TINY, run_py

    sweep = tmp_path / "sweep"
    proc = run_py("seed=0,1", *PPO_TINY, "hydra/launcher=slurm", "hydra.launcher.max_array_size=-1",
                  f"hydra.sweep.dir={sweep}", multirun=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr == "error: hydra.launcher.max_array_size=-1: expected a whole number >= 0\n", proc.stderr
    assert not sweep.exists()


@pytest.mark.parametrize("override, refused", [
    ("hydra.launcher.max_parallel=0", True), ("hydra.launcher.array_parallelism=two", True),
    ("hydra.launcher.array_parallelism=true", True), ("hydra.launcher.max_array_size=null", False),
    ("hydra.launcher.max_array_size=0", False), ("hydra.launcher.array_parallelism=4", False),
])
def test_launcher_counts_checked_before_the_sweep(override: str, refused: bool) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from rlexp.errors import ConfigError
    from rlexp.validate import check_launcher_counts

    parsed = OverridesParser.create().parse_overrides([override])
    if refused:
        with pytest.raises(ConfigError, match=f"^{re.escape(override)}: expected a whole number >= "):
            check_launcher_counts(parsed)
    else:
        check_launcher_counts(parsed)
