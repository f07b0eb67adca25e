"""Fault 6: a Ctrl-C during a step takes effect at the step's end, so the checkpoint written
on the interrupt holds whole Adam steps, labelled with the step they reach. A SIGTERM (kill,
timeout, SLURM's scancel) is handled as a Ctrl-C is, by every command: a render leaves nothing,
a 1-process training writes its checkpoint and resumes to an uninterrupted run's weights."""

import glob
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.optim.adam as adam_module
from helpers import one_line
from modelkit import random_model

from distlg.cli import main
from distlg.modeldir.format import ModelDir

TRAIN = ["train", "--signal", "builtin:camera@32x32", "--factors", "2", "2", "--params", "400",
         "--no-progress", "--no-tensorboard", "--steps", "6", "--checkpoint-every", "3"]


def _weights(path):
    model = ModelDir.open(path).load()
    return model.state_dict()


def test_an_interrupt_between_adams_groups_waits_for_the_step(tmp_path, capsys, monkeypatch):
    assert main(TRAIN + ["--out", str(tmp_path / "ref")]) == 0
    adam, calls = adam_module.adam, []

    def interrupted_adam(*args, **kwargs):
        calls.append(1)
        if len(calls) == 6:  # step 3, between the local group and the replicated one
            os.kill(os.getpid(), signal.SIGINT)
        return adam(*args, **kwargs)

    monkeypatch.setattr(adam_module, "adam", interrupted_adam)
    capsys.readouterr()
    assert main(TRAIN + ["--out", str(tmp_path / "run")]) == 130
    one_line(capsys.readouterr().err, "interrupted")
    saved = tmp_path / "run" / "checkpoints" / "step-00000003"
    reference = _weights(tmp_path / "ref" / "checkpoints" / "step-00000003")
    for name, value in _weights(saved).items():
        assert torch.equal(value, reference[name]), name


ROOT = Path(__file__).resolve().parents[2]


def _terminated(args: list[str], ready: str) -> subprocess.CompletedProcess:
    """Run ``distlg ARGS``, send it SIGTERM once a path matching ``ready`` exists, and wait."""
    job = subprocess.Popen([sys.executable, "-m", "distlg", *args], cwd=ROOT, text=True,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not glob.glob(ready):
            assert job.poll() is None and time.time() < deadline, job.communicate()
            time.sleep(0.02)
        job.send_signal(signal.SIGTERM)
        out, err = job.communicate(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    return subprocess.CompletedProcess(job.args, job.returncode, out, err)


def test_a_terminated_render_leaves_nothing(tmp_path):
    model = random_model(tmp_path / "image", (32, 32), (2, 2), "image")
    outdir = tmp_path / "out"
    outdir.mkdir()
    done = _terminated(["render", str(model), "--out", str(outdir / "r.npy"), "--scale", "200",
                        "--no-progress"], str(outdir / ".r.npy.*.partial"))
    assert done.returncode == 130, done.stderr
    one_line(done.stderr, "interrupted", "nothing was written to")
    assert list(outdir.iterdir()) == []


def test_a_terminated_training_checkpoints_whole_steps_and_resumes_exactly(tmp_path):
    steps = ["--steps", "60", "--checkpoint-every", "10"]
    run = TRAIN + steps + ["--out", str(tmp_path / "run")]
    done = _terminated(run, str(tmp_path / "run" / "checkpoints" / "step-*" / "zarr.json"))
    assert done.returncode == 130, done.stderr
    one_line(done.stderr, "interrupted")
    assert "interrupted: checkpoint of step" in done.stdout
    assert not (tmp_path / "run" / "model").exists()
    assert main(run + ["--resume"]) == 0
    assert main(TRAIN + steps + ["--out", str(tmp_path / "ref")]) == 0
    resumed, reference = _weights(tmp_path / "run" / "model"), _weights(tmp_path / "ref" / "model")
    assert resumed.keys() == reference.keys()
    for name, value in resumed.items():
        assert torch.equal(value, reference[name]), name
