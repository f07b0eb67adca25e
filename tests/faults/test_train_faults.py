"""Faults of ``distlg train``: an --out that holds a run (fault 3), bad numbers (fault 5)."""

import json
from pathlib import Path

import pytest
from helpers import one_line, snapshot

from distlg.cli import main

TINY = ["--signal", "builtin:camera@32x32", "--factors", "2", "2", "--params", "400",
        "--no-progress", "--no-tensorboard"]


def _train(out: Path, *extra: str) -> int:
    return main(["train", *TINY, "--out", str(out), *extra])


def _history_steps(out: Path) -> list[int]:
    lines = (out / "history.jsonl").read_text().splitlines()
    return [json.loads(line)["step"] for line in lines if "loss" in json.loads(line)]


@pytest.fixture
def run(tmp_path):
    out = tmp_path / "run"
    assert _train(out, "--steps", "6", "--checkpoint-every", "3", "--log-every", "1") == 0
    return out


def test_an_existing_run_is_refused_without_resume_or_overwrite(run, capsys):
    capsys.readouterr()
    before = snapshot(run)
    assert _train(run, "--steps", "2") == 2
    one_line(capsys.readouterr().err, "holds a run already", "--resume", "--overwrite")
    assert snapshot(run) == before


def test_overwrite_replaces_the_old_run(run, capsys):
    assert _train(run, "--steps", "2", "--checkpoint-every", "1", "--log-every", "1",
                  "--overwrite") == 0
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-00000001",
                                                                       "step-00000002"]
    assert _history_steps(run) == [1, 2]


def test_resume_and_overwrite_exclude_each_other(run, capsys):
    capsys.readouterr()
    before = snapshot(run)
    assert _train(run, "--steps", "8", "--resume", "--overwrite") == 2
    one_line(capsys.readouterr().err, "give one")
    assert snapshot(run) == before


def test_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "f").write_text("mine")
    assert _train(tmp_path / "f", "--steps", "2") == 2
    one_line(capsys.readouterr().err, "is a file")
    assert (tmp_path / "f").read_text() == "mine"

