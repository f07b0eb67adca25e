"""Fault 9 (and the settings of fault 10): every bad input or unwritable output is one line
and exit status 2, never a traceback, and changes nothing."""

from pathlib import Path

import pytest
from helpers import one_line, snapshot
from modelkit import random_model

from distlg.cli import main

TRAIN = ["train", "--signal", "builtin:camera@32x32", "--factors", "2", "2", "--params", "400",
         "--steps", "2", "--no-progress", "--no-tensorboard"]


@pytest.fixture
def image(tmp_path):
    return random_model(tmp_path / "image", (16, 16), (2, 2), "image")


def _blocked(tmp_path: Path) -> Path:
    """An output folder that cannot be created: its parent is a file."""
    (tmp_path / "file").write_text("mine")
    return tmp_path / "file" / "out"


COMMANDS = {
    "ingest": lambda model, out: ["ingest", "builtin:camera@16x16", str(out / "s.zarr")],
    "train": lambda model, out: TRAIN + ["--out", str(out)],
    "export": lambda model, out: ["export", str(model), str(out), "--no-progress"],
    "crop": lambda model, out: ["crop", str(model), str(out), "--drop-partitions", "0"],
    "render": lambda model, out: ["render", str(model), "--out", str(out / "r.png"),
                                  "--no-progress"],
}


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_an_output_that_cannot_be_created_is_one_line(command, image, tmp_path, capsys):
    out = _blocked(tmp_path)
    before = snapshot(tmp_path)
    assert main(COMMANDS[command](image, out)) == 2
    one_line(capsys.readouterr().err, f"distlg {command}: error:")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("flag, value, needle", [
    ("--log-every", "0", "log every must be >= 1"),
    ("--checkpoint-every", "-1", "checkpoint every must be >= 0"),
    ("--eval-every", "-1", "eval every must be >= 0"),
])
def test_bad_intervals_are_refused(tmp_path, capsys, flag, value, needle):
    assert main(TRAIN + ["--out", str(tmp_path / "run"), f"{flag}={value}"]) == 2
    one_line(capsys.readouterr().err, needle)
    assert not (tmp_path / "run").exists()


def test_a_config_section_given_as_a_string_is_refused(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("signal: path.zarr\n")
    assert main(["train", str(config), "--out", str(tmp_path / "run")]) == 2
    one_line(capsys.readouterr().err, "config section signal must be a mapping")


def test_a_huge_id_range_is_one_line(image, tmp_path, capsys):
    assert main(["crop", str(image), str(tmp_path / "c"), "--drop-partitions",
                 "0-99999999999999"]) == 2
    one_line(capsys.readouterr().err, "goes past the last id, 3")
    assert not (tmp_path / "c").exists()
    assert main(["crop", str(image), str(tmp_path / "c"), "--drop-along",
                 "y=0-99999999999999"]) == 2
    one_line(capsys.readouterr().err, "goes past the last id, 1")
