"""Progress that reads well in a file and on a terminal: plain lines without a TTY, SB3's bar with one, both over
the steps really trained; no terminal escape codes in run.log."""

from __future__ import annotations

import logging
import os
import pty
import re
from pathlib import Path

import pytest

from helpers import PPO_TINY, read_json, start_py

# PPO trains whole rollouts of 64 steps x 2 envs: total_steps=300 trains 384 steps.
PPO = [*(a for a in PPO_TINY if a != "progress=false"), "total_steps=300", "device=cpu"]


@pytest.mark.slow
def test_without_a_tty_progress_is_plain_lines_over_the_steps_trained(tmp_path: Path) -> None:
    run_dir, out = tmp_path / "run", tmp_path / "out.txt"
    with out.open("wb") as f:
        proc = start_py(*PPO, "progress_percent=25", "progress_minutes=0", f"hydra.run.dir={run_dir}",
                        stdout=f.fileno())
        try:
            proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
    data = out.read_bytes()
    assert proc.returncode == 0, data[-3000:].decode(errors="replace")
    assert b"\x1b" not in data and b"\x1b" not in (run_dir / "run.log").read_bytes(), "no escape codes in files"
    text = data.decode()
    assert "steps          384 (300 asked" in text, "the header's count"
    lines = [x for x in text.splitlines() if "] - progress " in x]
    assert [re.search(r"progress ([\d,]+)/([\d,]+) steps \((\d+)%\)", x).groups() for x in lines] == [
        ("96", "384", "25"), ("192", "384", "50"), ("288", "384", "75"), ("384", "384", "100")], lines
    assert all(re.search(r"\| [\d,]+ steps/s", x) for x in lines), lines
    assert "ETA" in lines[0] and "success" not in lines[0], "no episode has ended at 96 steps (48 per env)"
    assert re.search(r"success \d+% \(last \d+ episodes\)", lines[-1]), lines
    assert [x.split(" - ", 1)[1] for x in (run_dir / "run.log").read_text().splitlines() if "] - progress " in x] \
        == [x.split(" - ", 1)[1] for x in lines], "the same lines in run.log"
    assert read_json(run_dir / "model.meta.json")["total_steps"] == 384


@pytest.mark.slow
def test_on_a_tty_the_bar_counts_the_steps_trained(tmp_path: Path) -> None:
    """stdout on a pseudo-terminal: SB3's rich bar, over the 384 steps trained (SB3's own counted the 300 asked)."""
    leader, follower = pty.openpty()
    proc = start_py(*PPO, f"hydra.run.dir={tmp_path / 'run'}", env={"TERM": "xterm", "COLUMNS": "160"},
                    stdout=follower)
    os.close(follower)
    chunks = []
    try:
        while True:  # read as it comes: a full pty buffer would block the run
            try:
                chunk = os.read(leader, 1 << 16)
            except OSError:  # EIO: every writer closed its side
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(leader)
        proc.wait(timeout=600)
    text = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, text[-3000:]
    assert "384/384" in text and "/300" not in text, text[-3000:]
    assert "] - progress " not in text, "a bar, not lines"


def test_file_handler_strips_escape_codes(tmp_path: Path) -> None:
    """run.log's handler (rlexp.diskfull.LogFileHandler, as Hydra's job_logging names it) writes what a coloured
    formatter produces (Optuna's) without the escape codes; the terminal keeps them."""
    from rlexp.diskfull import LogFileHandler

    path = tmp_path / "run.log"
    handler = LogFileHandler(path, delay=True)
    handler.setFormatter(logging.Formatter("\x1b[32m[%(levelname)s]\x1b[0m %(message)s"))
    logger = logging.getLogger("test_progress.colour")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("\x1b[1;33mTrial 0 finished\x1b[0m with value \x1b]8;;https://optuna.org\x1b\\0.5\x1b]8;;\x1b\\")
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert path.read_bytes() == b"[WARNING] Trial 0 finished with value 0.5\n"
