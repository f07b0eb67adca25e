"""Fault 10, continued: resuming on another signal, renders larger than memory, a stopped
render's store, identical weights in identical files, an extend that diverges."""

import json

import numpy as np
import pytest
import torch
from helpers import one_line, snapshot
from modelkit import random_model

from distlg.cli import main
from distlg.data.signal import Signal
from distlg.modeldir.files import write_tensors
from distlg.rendering import render as render_module
from distlg.rendering.render import RegionRender
from distlg.rendering.writers import open_writer
from distlg.training import extend as extend_module

TRAIN = ["train", "--factors", "2", "2", "--params", "400", "--no-progress", "--no-tensorboard"]


def _ingest(tmp_path, name: str, seed: int) -> str:
    array = np.random.default_rng(seed).integers(0, 256, (32, 32), dtype=np.uint8)
    np.save(tmp_path / f"{name}.npy", array)
    assert main(["ingest", str(tmp_path / f"{name}.npy"), str(tmp_path / f"{name}.zarr"),
                 "--no-progress"]) == 0
    return str(tmp_path / f"{name}.zarr")


def test_resume_on_another_signal_of_the_same_shape_is_refused(tmp_path, capsys):
    a, b = _ingest(tmp_path, "a", 0), _ingest(tmp_path, "b", 1)
    out = tmp_path / "run"
    assert main(TRAIN + ["--signal", a, "--out", str(out), "--steps", "4",
                         "--checkpoint-every", "2"]) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert main(TRAIN + ["--signal", b, "--out", str(out), "--steps", "6", "--resume"]) == 2
    one_line(capsys.readouterr().err, "trained on another signal", "b.zarr")
    assert snapshot(out) == before
    # the same signal, also after moving its store, resumes
    (tmp_path / "a.zarr").rename(tmp_path / "moved.zarr")
    assert main(TRAIN + ["--signal", str(tmp_path / "moved.zarr"), "--out", str(out),
                         "--steps", "6", "--resume"]) == 0


def test_identical_weights_give_identical_files(tmp_path):
    """safetensors writes metadata in a per-process hash order: the header is sorted."""
    tensors = {"b": torch.arange(3.0), "a": torch.ones(2, 2)}
    meta = {k: str(i) for i, k in enumerate(["zeta", "alpha", "partition", "mu", "beta"])}
    entry = write_tensors(tmp_path, "x.safetensors", tensors, meta)
    data = (tmp_path / "x.safetensors").read_bytes()
    header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")])
    assert list(header["__metadata__"]) == sorted(header["__metadata__"])
    again = write_tensors(tmp_path, "y.safetensors", tensors, dict(reversed(meta.items())))
    assert again["sha256"] == entry["sha256"]


def test_a_render_larger_than_memory_is_refused_before_allocating(tmp_path, capsys, monkeypatch):
    model = random_model(tmp_path / "m", (16, 16), (2, 2), "image")
    monkeypatch.setattr(render_module, "available_memory", lambda: 64 << 20)
    before = snapshot(tmp_path)
    # 16 x 16 at scale 1024: 8e8 values, which a PNG (and one array) holds whole
    assert main(["render", str(model), "--out", str(tmp_path / "big.png"), "--scale", "1024",
                 "--no-progress"]) == 2
    one_line(capsys.readouterr().err, "needs about", "available", ".npy")
    assert snapshot(tmp_path) == before
    with pytest.raises(render_module.RenderError, match="needs about"):
        render_module.render(tmp_path / "m", scale=1024)
    # a streamed output needs one slab: not refused
    assert RegionRender(model, scale=1024).memory_needed() < 64 << 20


def test_a_stopped_renders_store_says_so(tmp_path, capsys):
    model = random_model(tmp_path / "m", (16, 16), (2, 2), "image")
    plan = RegionRender(model)
    output = open_writer(tmp_path / "r.zarr", plan)
    output.write(next(iter(plan)))  # killed here: never closed, never moved into place
    stopped = output.staging / "r.zarr"
    assert main(TRAIN + ["--signal", str(stopped), "--out", str(tmp_path / "run")]) == 2
    one_line(capsys.readouterr().err, "render that did not finish")
    assert not (tmp_path / "run").exists()


def test_an_extend_that_diverges_writes_nothing(tmp_path):
    model = random_model(tmp_path / "m", (6, 8, 10), (2, 2, 1), "video")
    clip = np.random.default_rng(0).uniform(0, 255, (9, 8, 10, 3)).astype(np.float32)
    clip[7] = np.nan  # the new part of the signal
    signal = Signal.from_array(clip, "video", (0.0, 255.0))
    signal = Signal(signal.data, "video", (0.0, 255.0))
    before = snapshot(tmp_path)
    from distlg.config import ExtendConfig

    with pytest.raises(extend_module.ExtendError, match="not finite"):
        extend_module.extend(model, signal, settings=ExtendConfig(steps=3, samples_per_partition=8,
                                                                  progress=False))
    assert snapshot(tmp_path) == before
