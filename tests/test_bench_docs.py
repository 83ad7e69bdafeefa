"""bench/: a results section rebuilt where only some runs' directories are keeps every other row, and a run's
record (bench/records/NAME) tabulates like the run directory it was copied from.

The learning tables in docs/results.md are built from run directories (bench/out/, untracked); a rebuild on a
fresh machine used to drop every row whose run was not there.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from helpers import HER_TINY, ROOT, ok, run_py

sys.path.insert(0, str(ROOT / "bench"))
import learning  # noqa: E402
from docsection import carry_over, write_section  # noqa: E402

HEAD = "| run | steps | result |\n|---|---|---|"
OLD = f"""Machine: old box.
Two runs shared the cores.

{HEAD}
| a | 100 | 5% |
| b | 200 | 40% |
| c | 300 | 90% |

Marks by run:

- a: 50k 5%
- b: 50k 5%, 100k 40%
- c: 100k 90%
"""


def _doc(tmp_path: Path) -> Path:
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\nprose above\n")
    write_section(doc, "solve", "Time to solve", OLD)
    doc.write_text(doc.read_text() + "\nprose below\n")
    return doc


def test_rebuild_keeps_rows_it_has_no_run_for(tmp_path: Path) -> None:
    doc = _doc(tmp_path)
    new = f"Machine: new box.\n\n{HEAD}\n| b | 250 | 60% |\n\nMarks by run:\n\n- b: 50k 5%, 100k 40%, 150k 60%\n"
    body = carry_over(doc, "solve", new, order=["a", "b", "c"])
    write_section(doc, "solve", "Time to solve", body)
    text = doc.read_text()
    # a and c kept verbatim, b replaced, in the given order; the old header still describes a and c
    assert f"{HEAD}\n| a | 100 | 5% |\n| b | 250 | 60% |\n| c | 300 | 90% |" in text
    assert "- a: 50k 5%\n- b: 50k 5%, 100k 40%, 150k 60%\n- c: 100k 90%" in text
    assert "| b | 200 |" not in text
    assert "Machine: old box.\nTwo runs shared the cores." in text
    assert "Rows rebuilt later (b): Machine: new box." in text
    assert text.startswith("# Results\n\nprose above\n") and text.endswith("prose below\n")
    # the same rebuild again changes nothing; rebuilding a names a only, and takes it out of b's line
    assert carry_over(doc, "solve", new, order=["a", "b", "c"]) == body
    new_a = f"Machine: third box.\n\n{HEAD}\n| a | 150 | 7% |\n| b | 250 | 60% |\n"
    text = carry_over(doc, "solve", new_a, order=["a", "b", "c"])
    assert "Rows rebuilt later (b): Machine: new box." in text and "Rows rebuilt later (a): Machine: third box." in text
    new_ab = f"Machine: fourth box.\n\n{HEAD}\n| a | 160 | 8% |\n| b | 260 | 61% |\n"
    doc.write_text(doc.read_text().replace(body, text))
    text = carry_over(doc, "solve", new_ab, order=["a", "b", "c"])
    assert text.count("Rows rebuilt later") == 1 and "Rows rebuilt later (a, b): Machine: fourth box." in text
    assert "| c | 300 | 90% |" in text and "- c: 100k 90%" in text


def test_unchanged_rows_keep_their_header_and_reworded_captions_keep_their_lists(tmp_path: Path) -> None:
    doc = _doc(tmp_path)
    rows = "| a | 100 | 5% |\n| b | 200 | 40% |\n| c | 300 | 90% |"
    same = f"Machine: new box.\n\n{HEAD}\n{rows}\n\nMarks:\n\n- a: 50k 5%\n"
    text = carry_over(doc, "solve", same)
    assert "Machine: old box." in text and "new box" not in text  # nothing rebuilt with new numbers
    assert "Marks:\n\n- a: 50k 5%" in text
    assert "Marks by run:\n\n- b: 50k 5%, 100k 40%\n- c: 100k 90%" in text  # the old caption's other runs


def test_rebuild_with_nothing_here_is_a_no_op(tmp_path: Path) -> None:
    doc = _doc(tmp_path)
    empty = f"Machine: new box.\n\n{HEAD}\n\nMarks by run:\n\n\nTake-off:\n\n"
    before = doc.read_text()
    write_section(doc, "solve", "Time to solve", carry_over(doc, "solve", empty, order=[]))
    assert doc.read_text() == before


def test_full_rebuild_with_new_numbers_replaces_the_header(tmp_path: Path) -> None:
    doc = _doc(tmp_path)
    new = (
        f"Machine: new box.\n\n{HEAD}\n| a | 1 | 1% |\n| b | 2 | 2% |\n| c | 3 | 3% |\n\n"
        "Marks by run:\n\n- a: x\n- b: y\n- c: z\n"
    )
    assert carry_over(doc, "solve", new, order=["a", "b", "c"]) == new


def test_a_run_that_just_started_has_no_record_yet(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """A rebuild while a push_* run is in its first minutes (its directory holds a log, nothing to record)."""
    monkeypatch.setattr(learning, "OUT", tmp_path / "out")
    monkeypatch.setattr(learning, "RECORDS", tmp_path / "records")
    (tmp_path / "out" / "push_new" / ".hydra").mkdir(parents=True)
    (tmp_path / "out" / "push_new" / "run.log").write_text("header\n")
    learning.record("push_new")
    assert not (tmp_path / "records").exists() or not list((tmp_path / "records").iterdir())
    assert learning.solve_row(learning.run_path("push_new")) is None


@pytest.mark.slow
def test_record_tabulates_like_its_run_and_never_mixes_two_runs(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    out, records = tmp_path / "out", tmp_path / "records"
    monkeypatch.setattr(learning, "OUT", out)
    monkeypatch.setattr(learning, "RECORDS", records)
    run = out / "push_tiny"
    ok(run_py(*HER_TINY, "total_steps=600", "eval.freq=200", f"hydra.run.dir={run}"))
    from_run = learning.solve_row(run)
    curve = learning.curve("push_tiny")
    learning.record("push_tiny")
    assert sorted(p.name for p in (records / "push_tiny").iterdir()) == [
        ".hydra", "checkpoint.meta.json", "eval.json", "evaluations.csv", "model.meta.json", "success.csv"]
    shutil.move(run, tmp_path / "gone")  # the machine the run was on is gone; its record is not
    assert learning.run_path("push_tiny") == records / "push_tiny"
    assert learning.solve_row(records / "push_tiny") == from_run and from_run[1]  # the same row, evaluations
    assert learning.curve("push_tiny") == curve and curve
    assert learning.known_runs("push_*") == {"push_tiny"}
    # the name reused by a run that has no final evaluation yet: the old eval.json must not stay in the record
    shutil.copytree(tmp_path / "gone", run)
    (run / "eval.json").unlink()
    learning.record("push_tiny")
    assert not (records / "push_tiny" / "eval.json").exists()
    assert sorted(p.name for p in records.iterdir()) == ["push_tiny"]  # no build or swap folders left
    # a call stopped between its two renames (the new record whole in .tmp, the old one aside, none in place):
    # the next call puts the new one in place before it clears its swap folders; with the run gone it has
    # nothing to copy and keeps that record
    rec = records / "push_tiny"
    shutil.copytree(rec, records / ".push_tiny.tmp")
    rec.rename(records / ".push_tiny.old")
    (records / ".push_tiny.old" / "old.txt").write_text("the record before")
    shutil.rmtree(run)
    learning.record("push_tiny")
    assert (rec / "success.csv").is_file() and not (rec / "old.txt").exists()
    assert sorted(p.name for p in records.iterdir()) == ["push_tiny"]


def test_book_versions_record_reads_like_its_run_and_a_recorded_name_is_not_rerun(tmp_path: Path,
                                                                                monkeypatch) -> None:  # noqa: ANN001
    """bench/book_versions.py: files a run is still writing are read up to their last whole line, a record
    tabulates like its run once the run directory is gone, a stop between the record's renames loses neither
    record, and `run` refuses a name that already has a record (it would replace a long run with a new one)."""
    import book_versions as bv

    out, records = tmp_path / "out", tmp_path / "records"
    monkeypatch.setattr(bv, "OUT", out)
    monkeypatch.setattr(bv, "RECORDS", records)
    run = out / "versions_era_s0"
    run.mkdir(parents=True)
    versions = {"stable-baselines3": "2.7.1", "gymnasium": "1.2.2", "gymnasium-robotics": "1.4.1", "mujoco": "3.4.0",
                "torch": "2.13.0+cpu", "numpy": "2.4.6"}
    (run / "meta.json").write_text(json.dumps({"set": "era", "seed": 0, "versions": versions, "steps_reached": 200000,
                                               "machine": "2 cores (X), Linux, Python 3.11.7, CPU only",
                                               "train_time_s": 660.0}))
    (run / "evaluations.csv").write_text(
        "step,train_time_s,success_rate,return_mean,final_distance_mean,eval_s\n"
        "100000,330.0,0.05,-47.5,0.184,7.0\n200000,660.0,0.92,-15.1,0.031,7.1\n300000,99")  # a row being written
    (run / "progress.csv").write_text(  # SB3's CSV: blank cells where a key was not logged, a row being written
        "time/total_timesteps,rollout/success_rate,train/critic_loss\n"
        "2000,0.05,\n100000,0.3,0.1\n150000,,0.1\n200000,0.6,0.2\n210000,0.")
    text = bv.table()
    assert "| versions_era_s0 | SB3 2.7.1, gymnasium 1.2.2, gymnasium-robotics 1.4.1, mujoco 3.4.0, " in text
    assert "| 0 | 200,000 | 11.0 min | 200,000 | 200,000 |" in text  # training 50% at 200k; eval 92% at 200k
    assert "- versions_era_s0, periodic evaluation: 100k 5% (184), 200k 92% (31)" in text
    assert "- versions_era_s0, training success: 100k 30%, 200k 60%" in text
    bv.record("versions_era_s0")
    assert sorted(p.name for p in records.iterdir()) == ["versions_era_s0"]
    shutil.move(run, tmp_path / "gone")
    assert bv.table() == text
    # stopped between the renames: the new record whole in .tmp, the old one aside, none in place
    rec = records / "versions_era_s0"
    shutil.copytree(rec, records / ".versions_era_s0.tmp")
    rec.rename(records / ".versions_era_s0.old")
    bv.record("versions_era_s0")
    assert sorted(p.name for p in records.iterdir()) == ["versions_era_s0"] and bv.table() == text
    monkeypatch.setattr(sys, "argv", ["book_versions.py", "run", "era", "--seed", "0"])
    with pytest.raises(SystemExit, match="versions_era_s0 exists"):
        bv.main()
