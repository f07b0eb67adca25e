"""Extending a model to appended frames: new partitions only, the old part untouched."""

from pathlib import Path

import numpy as np
import pytest
from modelkit import bikes_clip, random_model

from distlg.config import Config, ExtendConfig
from distlg.data.signal import Signal
from distlg.modeldir.format import ModelDir
from distlg.rendering.render import render
from distlg.training.evaluation import evaluate
from distlg.training.extend import ExtendError, extend, extended_grid
from distlg.training.trainer import train

WIDTHS = dict(local_width=32, global_width=16, samples_per_partition=256, lr=5e-4, seed=0)
"""Per-partition budget of every run below: 3,395 local weights each, 2,448 global."""


def trained(out, clip, factors, steps):
    config = Config().replace(out=str(out), factors=factors, steps=steps, tensorboard=False,
                              progress=False, **WIDTHS)
    return train(config, signal=Signal.from_array(clip, "video"))


def test_extending_bikes_matches_training_on_all_frames(tmp_path, shared_data, capsys):
    clip = bikes_clip(16, 32)
    first = trained(tmp_path / "first", clip[:8], [2, 2, 2], 300)  # frames 0-7, 8 partitions
    joint = trained(tmp_path / "joint", clip, [4, 2, 2], 300)  # frames 0-15, 16 partitions
    # the same work as the joint run spent: 8 new partitions x 600 steps = 16 x 300
    settings = ExtendConfig(steps=600, samples_per_partition=256, lr=5e-4)
    result = extend(tmp_path / "first" / "model", Signal.from_array(clip, "video"),
                    tmp_path / "extended", settings)
    assert result.new_partitions == list(range(8, 16))
    md = ModelDir.open(result.path)
    assert md.grid.factors == (4, 2, 2) and md.grid.extent == (8, 32, 32)
    assert md.params()["global"] == result.params_before["global"]
    assert md.params()["local"] == 2 * result.params_before["local"]

    joint_model = ModelDir.open(joint.model_dir).load(range(8, 16))
    joint_new = evaluate(joint_model, joint.plan.grid, Signal.from_array(clip, "video"),
                         range(8, 16)).psnr
    with capsys.disabled():
        print(f"\nextend: new frames {result.psnr:.2f} dB after {result.steps} steps; trained on "
              f"all frames at once: {joint_new:.2f} dB (old frames: {first.final.psnr:.2f} dB)")
    assert result.psnr > joint_new - 1.0
    old = ((0, 8), (0, 32), (0, 32))
    assert np.array_equal(render(result.path, old), render(first.model_dir, old))
    old_md = ModelDir.open(first.model_dir)
    glob = Path("global") / "c" / "0"
    assert (md.path / glob).read_bytes() == (first.model_dir / glob).read_bytes()
    assert np.array_equal(md.codes[:8], old_md.codes)  # the old partitions' chunks, unchanged


def test_extend_in_place_keeps_old_ids_and_coordinates(tmp_path):
    model = random_model(tmp_path / "m", (6, 8, 10), (2, 2, 1), "video", overlaps=(1, 0, 0))
    before = render(model)
    clip = np.random.default_rng(0).integers(0, 256, (12, 8, 10, 3), dtype=np.uint8)
    result = extend(model, Signal.from_array(clip, "video"), None,
                    ExtendConfig(steps=3, samples_per_partition=16))
    md = ModelDir.open(model)
    assert result.path == model and md.partition_ids == list(range(8))
    assert md.grid.part_shape == (3, 4, 10) and md.signal.shape == (12, 8, 10)
    assert md.grid.normalise(np.asarray([5, 0, 0]))[0] == 1.0  # old extent: frame 5 is still 1
    assert np.array_equal(render(model, ((0, 6), (0, 8), (0, 10))), before)


def test_extend_refuses_what_it_cannot_do(tmp_path):
    md = ModelDir.open(random_model(tmp_path / "m", (6, 8, 10), (2, 2, 1), "video"))
    rng = np.random.default_rng(0)

    def clip(shape, kind="video"):
        return Signal.from_array(rng.integers(0, 256, shape, dtype=np.uint8), kind)

    for signal, message in [
        (clip((12, 8, 11, 3)), "the same sizes after the first axis"),
        (clip((6, 8, 10, 3)), "nothing to extend"),
        (clip((12, 8, 10, 1)), "3 channels"),
        (Signal.from_array(rng.random((12, 8, 10, 3)) * 2, "video"), "value range"),
        (clip((4, 8, 10, 3)), "nothing to extend"),
    ]:
        with pytest.raises(ExtendError, match=message):
            extend(md, signal, tmp_path / "out")
    padded = ModelDir.open(random_model(tmp_path / "p", (5, 8, 10), (2, 2, 1), "video"))
    with pytest.raises(ExtendError, match="last partition along the first axis is padded"):
        extend(padded, clip((9, 8, 10, 3)), tmp_path / "out")
    with pytest.raises(ExtendError, match="without an empty one"):
        extended_grid(ModelDir.open(random_model(tmp_path / "q", (4, 8), (1, 2), "image")).grid,
                      (5, 8))
    assert not (tmp_path / "out").exists()


def write_store(path, array, kind):
    """``array`` as a complete signal store (what `distlg ingest` writes)."""
    from distlg.data import store

    signal = Signal.from_array(array, kind)
    info = {"kind": kind, "axes": list(signal.axes), "value_range": list(signal.value_range),
            "meta": {"fps": 25.0}}
    stored = store.create(path, array.shape, array.dtype, array.shape[:-1], signal.axes, info)
    stored[...] = array
    store.update(stored, complete=True)
    return path


def test_extend_command_reads_a_store(tmp_path, capsys):
    from distlg.cli import main

    model = random_model(tmp_path / "m", (6, 8, 10), (2, 2, 1), "video")
    clip = np.random.default_rng(1).integers(0, 256, (9, 8, 10, 3), dtype=np.uint8)
    store = write_store(tmp_path / "clip.zarr", clip, "video")
    assert main(["extend", str(model), str(tmp_path / "out"), "--signal", str(store),
                 "--steps", "4", "--samples-per-partition", "8", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "added partitions 4-5 (2), trained 4 steps" in printed and "weights after:" in printed
    assert ModelDir.open(tmp_path / "out").partition_ids == list(range(6))
    assert main(["extend", str(model), "--signal", str(store)]) == 2
    assert "give either OUT or --in-place" in capsys.readouterr().err
