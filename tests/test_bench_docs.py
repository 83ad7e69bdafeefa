"""bench/: a results section rebuilt where only some runs' directories are keeps every other row under the
section's one header (no per-rebuild provenance paragraphs: each row names its machine, each run's notes are a
bullet), a run's record (bench/records/NAME) tabulates like the run directory it was copied from, and the
generated sections of docs/results.md are what their scripts rebuild from bench/records.

The learning tables in docs/results.md are built from run directories (bench/out/, untracked); a rebuild on a
fresh machine used to drop every row whose run was not there.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from helpers import HER_TINY, ROOT, ok, run_py

sys.path.insert(0, str(ROOT / "bench"))
import learning  # noqa: E402
from docsection import carry_over, write_section  # noqa: E402

HEAD = "| run | machine | steps | result |\n|---|---|---|---|"
HEADER = "`python make.py --write results.md` builds this table; each row names its machine."
OLD = f"""{HEADER}

A paragraph about the runs of one rebuild, which a later rebuild must not keep.

{HEAD}
| a | old box | 100 | 5% |
| b | old box | 200 | 40% |
| c | other box | 300 | 90% |

Marks by run:

- a: 50k 5%
- b: 50k 5%, 100k 40%
- c: 100k 90%

How each run ran:

- a: beside b.
- b: beside a.
- c: alone.
"""
# What a section must never hold again: paragraphs on which rows a rebuild replaced, and from where.
DIARY = re.compile(r"rebuilt|[Ii]ssue \d|this session|written-out|superseded")


def _doc(tmp_path: Path) -> Path:
    doc = tmp_path / "results.md"
    doc.write_text("# Results\n\nprose above\n")
    write_section(doc, "solve", "Time to solve", OLD)
    doc.write_text(doc.read_text() + "\nprose below\n")
    return doc


def _section(text: str, name: str = "solve") -> str:
    return text[text.index(f"<!-- {name}:start -->") : text.index(f"<!-- {name}:end -->")]


def _rebuild(doc: Path, body: str) -> str:
    write_section(doc, "solve", "Time to solve", carry_over(doc, "solve", body, order=["a", "b", "c"]))
    return doc.read_text()


def test_rebuild_keeps_rows_it_has_no_run_for_under_one_header(tmp_path: Path) -> None:
    doc = _doc(tmp_path)
    new = (f"{HEADER}\n\n{HEAD}\n| b | new box | 250 | 60% |\n\nMarks by run:\n\n- b: 50k 5%, 100k 40%, 150k 60%\n\n"
           "How each run ran:\n\n- b: alone, resumed once.\n")
    body = carry_over(doc, "solve", new, order=["a", "b", "c"])
    text = _rebuild(doc, new)
    # a and c kept verbatim, machine cells included; b replaced, with its own machine; in the given order
    assert f"{HEAD}\n| a | old box | 100 | 5% |\n| b | new box | 250 | 60% |\n| c | other box | 300 | 90% |\n" in text
    assert "- a: 50k 5%\n- b: 50k 5%, 100k 40%, 150k 60%\n- c: 100k 90%\n" in text
    assert "- a: beside b.\n- b: alone, resumed once.\n- c: alone.\n" in text
    assert "| b | old box |" not in text and "- b: beside a." not in text
    # one header, the new body's, right under the title: no paragraph about which rows came from where
    assert _section(text).startswith(f"<!-- solve:start -->\n## Time to solve\n\n{HEADER}\n\n{HEAD}\n")
    assert "A paragraph about the runs" not in text and not DIARY.search(text)
    assert text.startswith("# Results\n\nprose above\n") and text.endswith("prose below\n")
    # the same rebuild again changes nothing; rebuilding a, then a and b, keeps one header and every row
    assert carry_over(doc, "solve", new, order=["a", "b", "c"]) == body
    text = _rebuild(doc, f"{HEADER}\n\n{HEAD}\n| a | third box | 150 | 7% |\n")
    assert "| a | third box | 150 | 7% |\n| b | new box | 250 | 60% |\n| c | other box | 300 | 90% |" in text
    assert "- a: beside b." not in text and "- b: alone, resumed once.\n- c: alone." in text  # a's old notes go
    text = _rebuild(doc, f"{HEADER}\n\n{HEAD}\n| a | fourth box | 160 | 8% |\n| b | fourth box | 260 | 61% |\n")
    section = _section(text)
    assert section.count(HEADER) == 1 and section.count("| run |") == 1 and not DIARY.search(text)
    assert re.findall(r"^\| (\w) \|", section, re.M) == ["a", "b", "c"]  # no row dropped, none twice
    assert "| c | other box | 300 | 90% |" in text and "- c: 100k 90%" in text and "- c: alone." in text


def test_reworded_header_and_captions(tmp_path: Path) -> None:
    """The header is always the new body's; a list whose caption was reworded keeps the other runs' lines."""
    doc = _doc(tmp_path)
    same = f"New header.\n\n{HEAD}\n| a | old box | 100 | 5% |\n\nMarks:\n\n- a: 50k 5%\n"
    text = carry_over(doc, "solve", same)
    assert text.startswith(f"New header.\n\n{HEAD}\n") and HEADER not in text
    assert "Marks:\n\n- a: 50k 5%" in text
    assert "Marks by run:\n\n- b: 50k 5%, 100k 40%\n- c: 100k 90%" in text  # the old caption's other runs
    assert "How each run ran:\n\n- b: beside a.\n- c: alone." in text


def test_rebuild_with_nothing_here_is_a_no_op(tmp_path: Path) -> None:
    doc = _doc(tmp_path)
    doc.write_text(doc.read_text().replace("A paragraph about the runs of one rebuild, which a later rebuild must "
                                           "not keep.\n\n", ""))
    empty = f"{HEADER}\n\n{HEAD}\n\nMarks by run:\n\n\nTake-off:\n\n\nHow each run ran:\n\n"
    before = doc.read_text()
    write_section(doc, "solve", "Time to solve", carry_over(doc, "solve", empty, order=[]))
    assert doc.read_text() == before


def test_full_rebuild_with_new_numbers_replaces_the_section(tmp_path: Path) -> None:
    doc = _doc(tmp_path)
    new = (
        f"{HEADER}\n\n{HEAD}\n| a | x | 1 | 1% |\n| b | x | 2 | 2% |\n| c | x | 3 | 3% |\n\n"
        "Marks by run:\n\n- a: x\n- b: y\n- c: z\n\nHow each run ran:\n\n- a: p\n- b: q\n- c: r\n"
    )
    assert carry_over(doc, "solve", new, order=["a", "b", "c"]) == new


def test_carried_rows_must_fit_the_new_columns(tmp_path: Path) -> None:
    """A table that gained a column cannot take old rows verbatim: the section is rewritten by hand."""
    doc = _doc(tmp_path)
    wider = "| run | machine | steps | result | book |\n|---|---|---|---|---|"
    with pytest.raises(ValueError, match="rewrite the section by hand"):
        carry_over(doc, "solve", f"{HEADER}\n\n{wider}\n| b | new box | 250 | 60% | x |\n")
    every = f"{HEADER}\n\n{wider}\n| a | n | 1 | 1% | x |\n| b | n | 2 | 2% | x |\n| c | n | 3 | 3% | x |\n"
    assert f"{wider}\n| a | n | 1 | 1% | x |" in carry_over(doc, "solve", every)  # nothing carried: fine


def test_results_doc_is_what_its_scripts_rebuild_from_the_records(tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """docs/results.md's learning and solve sections and docs/measurements.md's fast-path learning and version
    sections equal what `--write` makes of them from bench/records alone (no run directories), and hold no
    provenance diary."""
    import book_versions as bv

    monkeypatch.setattr(learning, "OUT", tmp_path / "out")
    monkeypatch.setattr(bv, "OUT", tmp_path / "out")
    doc, detail = tmp_path / "results.md", tmp_path / "measurements.md"
    shutil.copy(ROOT / "docs" / "results.md", doc)
    shutil.copy(ROOT / "docs" / "measurements.md", detail)
    before, detail_before = doc.read_text(), detail.read_text()
    for fast in (False, True):
        names = [n for n in learning.RUNS if (n in learning.BEFORE_FAST) != fast]
        key, title, header = learning.LEARNING[fast]
        learning.publish(detail if fast else doc, key, title, learning.table(names, header), names)
    learning.publish(doc, "push-solve", "Time to solve FetchPush-v4", learning.solve_table(), [])
    write_section(detail, "push-versions", "Push's take-off under other library versions",
                  "`python bench/book_versions.py table --write docs/measurements.md`\n\n" + bv.table())
    assert doc.read_text() == before
    assert detail.read_text() == detail_before
    for key in ("learning-bench", "push-solve"):
        assert not DIARY.search(_section(before, key)), key
    for key in ("learning-fast", "push-versions"):
        assert not DIARY.search(_section(detail_before, key)), key
    solve = _section(before, "push-solve")
    assert "| push_tqc_s0_intel | `python run.py +experiment=ch05_her_push_tqc " in solve
    assert "| Intel Xeon, 2 cores | tqc | 0 | 1,402,232 |" in solve  # its record's machine, not this one's
    assert f"- push_tqc_s0_intel: {learning.NOTES['push_tqc_s0_intel']}" in solve


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
        ".hydra", "checkpoint.meta.json", "eval.json", "evaluations.csv", "machine.txt", "model.meta.json",
        "success.csv"]
    assert (records / "push_tiny" / "machine.txt").read_text() == learning.machine() + "\n"
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
