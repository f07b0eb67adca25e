"""Fault 6: a Ctrl-C during a step takes effect at the step's end, so the checkpoint written
on the interrupt holds whole Adam steps, labelled with the step they reach."""

import os
import signal

import torch
import torch.optim.adam as adam_module
from helpers import one_line

from distlg.cli import main
from distlg.modeldir.format import ModelDir

TRAIN = ["train", "--signal", "builtin:camera@32x32", "--factors", "2", "2", "--params", "400",
         "--no-progress", "--no-tensorboard", "--steps", "6", "--checkpoint-every", "3"]


def _weights(path):
    model, _ = ModelDir.open(path).load()
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
