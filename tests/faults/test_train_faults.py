"""Faults of ``distlg train``: an --out that holds a run (fault 3), bad numbers (fault 5)."""

import importlib
import json
from pathlib import Path

import pytest
import torch
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


@pytest.mark.parametrize("flags", [["--cuda-graph"], ["--kernel", "triton"],
                                   ["--cuda-graph", "--arch", "local-global-incode"]])
def test_cuda_only_options_are_refused_before_the_old_run_is_touched(run, capsys, flags):
    """On a machine without CUDA (or with --device cpu) the CUDA-only options are one line,
    exit 2, and --overwrite has not yet deleted the run in --out."""
    capsys.readouterr()
    before = snapshot(run)
    assert _train(run, "--steps", "2", "--overwrite", "--device", "cpu", *flags) == 2
    one_line(capsys.readouterr().err, flags[0], "CUDA")
    assert snapshot(run) == before


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


@pytest.mark.parametrize("flag, value", [("--lr", "nan"), ("--w0", "inf"),
                                         ("--global-lr", "nan"), ("--lr-final", "inf")])
def test_non_finite_settings_are_refused(tmp_path, capsys, flag, value):
    assert _train(tmp_path / "run", "--steps", "2", flag, value) == 2
    one_line(capsys.readouterr().err, "finite")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, words", [
    (["--w0", "0"], ["w0", "> 0"]), (["--w0", "-30"], ["w0", "> 0"]),
    (["--compression", "0"], ["compression", "> 0"]), (["--local-width", "0"], ["local width", ">= 1"]),
    (["--global-width", "0"], ["global width", ">= 1"]),
    (["--max-global-width", "0"], ["max global width", ">= 1"]), (["--threads", "0"], ["threads"]),
    (["--schedule", "cosine", "--lr-final", "-1"], ["lr final", "[0, 1]"]),
    (["--lr-final", "5"], ["lr final", "[0, 1]"]), (["--memory-budget-gib", "-1"], ["memory budget"]),
    (["--partition-size", "0"], ["partition size", ">= 1"]), (["--global-share", "0"], ["global share"]),
    (["--lattice", "1000"], ["--lattice", "more cells than samples"]),
    (["--device", "cuda"], ["--device cuda", "CUDA"])])
def test_settings_out_of_their_range_are_refused(tmp_path, capsys, flags, words):
    """Zero, negative or too large values are one line naming the setting and its rule, exit 2,
    nothing written (they were ignored, or crashed, or ran out of memory)."""
    assert _train(tmp_path / "run", "--steps", "2", *flags) == 2
    one_line(capsys.readouterr().err, *words)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name, make", [("image.png", lambda p: p.write_bytes(b"\x89PNG\r\n\x1a\n....")),
                                        ("clip.zarr", lambda p: p.mkdir())])
def test_a_signal_given_as_the_config_file_says_to_pass_it_as_signal(tmp_path, capsys, name, make):
    make(tmp_path / name)
    assert main(["train", str(tmp_path / name), "--out", str(tmp_path / "run")]) == 2
    one_line(capsys.readouterr().err, "not a config file", f"--signal {tmp_path / name}")
    assert not (tmp_path / "run").exists()


def _poison_at(monkeypatch, at: int) -> None:
    """Make the weights NaN in the step ``at`` (as a NaN sample or an overflow would)."""
    train_module = importlib.import_module("distlg.training.trainer")
    make = train_module.training_step
    calls = []

    def poisoned(*args):
        step_fn = make(*args)

        def step(model, coords, values, scale):
            calls.append(1)
            if len(calls) == at:
                with torch.no_grad():
                    next(iter(model.parameters())).fill_(float("nan"))
            return step_fn(model, coords, values, scale)
        return step

    monkeypatch.setattr(train_module, "training_step", poisoned)


def test_a_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(
        tmp_path, capsys, monkeypatch):
    from distlg.modeldir.format import ModelDir

    _poison_at(monkeypatch, 4)
    out = tmp_path / "run"
    assert _train(out, "--steps", "8", "--checkpoint-every", "2", "--log-every", "100") == 2
    one_line(capsys.readouterr().err, "not finite", "step 4", "step-00000002")
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-00000002"]
    assert not (out / "model").exists()
    md = ModelDir.open(out / "checkpoints" / "step-00000002")
    model = md.load()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_non_finite_loss_is_caught_at_a_log_step(tmp_path, capsys, monkeypatch):
    _poison_at(monkeypatch, 3)
    out = tmp_path / "run"
    assert _train(out, "--steps", "8", "--checkpoint-every", "0", "--log-every", "1") == 2
    one_line(capsys.readouterr().err, "not finite", "step 3")
    assert not (out / "model").exists() and not (out / "checkpoints").exists()
