"""Numbers a command cannot use are one line before any work (they used to run for minutes,
allocate tens of GiB, write NaN into zarr.json, or end in a traceback), and options the output
does not use are refused rather than ignored."""

import json

import numpy as np
import pytest
from helpers import one_line, snapshot
from modelkit import random_model

from distlg.cli import main
from distlg.data.signal import SignalInfo
from distlg.geometry import PartitionGrid
from distlg.nn.model import INR, Architecture
from distlg.training.checkpoint import write_model
from distlg.training.distributed import World


@pytest.mark.parametrize("args, words", [
    (["builtin:astronaut@64x64", "--fps", "nan"], ["--fps nan"]),
    (["builtin:astronaut@64x64", "--fps", "0"], ["--fps 0"]),
    (["builtin:astronaut@64x64", "--fps", "-1"], ["--fps -1"]),
    (["builtin:astronaut@64x64", "--sample-rate", "inf"], ["--sample-rate inf"]),
    (["builtin:astronaut@64x64", "--noise", "gaussian:0.1", "--noise-seed", "-1"], ["--noise-seed -1"]),
    (["builtin:phantom@64", "--ct-angles", "1000000"], ["--ct-angles 1000000", "give fewer"]),
    (["builtin:astronaut@64x64", "--chunks", "100000", "100000", "--shape", "100000", "100000",
      "--dtype", "uint8"], ["a chunk of", "GiB"])])
def test_ingest_refuses_numbers_it_cannot_use(tmp_path, capsys, args, words):
    if "--shape" in args:  # a raw file of 100000 x 100000 bytes, sparse: nothing is read
        raw = tmp_path / "big.raw"
        with open(raw, "wb") as fh:
            fh.truncate(100000 * 100000)
        args = [str(raw), *args[1:]]
    assert main(["ingest", args[0], str(tmp_path / "s.zarr"), *args[1:], "--no-progress"]) == 2
    one_line(capsys.readouterr().err, *words)
    assert not (tmp_path / "s.zarr").exists()


def test_chunks_larger_than_the_signal_are_cut_to_it(tmp_path):
    """``--chunks 100000 100000`` on a 64 x 64 image tried to allocate 27.9 GiB."""
    assert main(["ingest", "builtin:astronaut@64x64", str(tmp_path / "s.zarr"), "--chunks",
                 "100000", "100000", "--no-progress"]) == 0
    meta = json.loads((tmp_path / "s.zarr" / "zarr.json").read_text())
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [64, 64, 3]


def test_train_refuses_a_seed_past_64_bits(tmp_path, capsys):
    assert main(["train", "--signal", "builtin:camera@32x32", "--seed", str(2**64), "--steps", "2",
                 "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    one_line(capsys.readouterr().err, "seed", "2^64")
    assert not (tmp_path / "run").exists()


@pytest.fixture
def video(tmp_path):
    return random_model(tmp_path / "video", (6, 8, 10), (2, 2, 1), "video")


@pytest.mark.parametrize("out, flags, words", [
    ("r.mp4", ["--rate", "nan"], ["frame rate"]), ("r.mp4", ["--rate", "inf"], ["frame rate"]),
    ("r.mp4", ["--rate", "-1"], ["frame rate"]), ("r.mp4", ["--rate", "1e12"], ["frame rate"]),
    ("r.npy", ["--rate", "30"], ["--rate", "leave --rate out"]),
    ("r.npy", ["--level", "100"], ["--level", "not a mesh"])])
def test_render_refuses_what_its_output_cannot_use(video, tmp_path, capsys, out, flags, words):
    before = snapshot(tmp_path)
    assert main(["render", str(video), "--out", str(tmp_path / out), *flags, "--no-progress"]) == 2
    one_line(capsys.readouterr().err, *words)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("out", ["r.npy", "r.zarr"])
def test_a_render_larger_than_the_disk_is_refused_up_front(tmp_path, capsys, out):
    """``--scale 1000000`` of a 64 x 64 image (49 PB as .npy) used to start writing."""
    model = random_model(tmp_path / "image", (16, 16), (2, 2), "image")
    before = snapshot(tmp_path)
    assert main(["render", str(model), "--out", str(tmp_path / out), "--scale", "1000000",
                 "--no-progress"]) == 2
    one_line(capsys.readouterr().err, "would not fit", "GB free")
    assert snapshot(tmp_path) == before


def test_a_wav_rate_past_its_header_is_refused(tmp_path, capsys):
    model = random_model(tmp_path / "audio", (64,), (2,), "audio", channels=1, dtype="int16",
                         value_range=(-100.0, 100.0))
    assert main(["render", str(model), "--out", str(tmp_path / "r.wav"), "--rate", "1e12",
                 "--no-progress"]) == 2
    one_line(capsys.readouterr().err, "sample rate")
    assert not (tmp_path / "r.wav").exists()


def test_a_level_the_model_never_reaches_writes_no_empty_mesh(tmp_path, capsys):
    """A level inside the value range but above every rendered value wrote a mesh of 0
    vertices and exited 0."""
    grid = PartitionGrid((8, 8, 8), (2, 2, 2))
    arch = Architecture("local-global", 3, 1, hidden_layers=1, local_width=4, global_width=4)
    model = INR(arch, range(grid.num_partitions), seed=0)
    for p in model.parameters():  # a constant field: every value renders as 0.0 -> raw 127.5
        p.data.zero_()
    path = write_model(tmp_path / "flat", model, World(), grid,
                       SignalInfo("volume", (8, 8, 8), 1, np.dtype("uint8"), (0.0, 255.0)))
    assert main(["render", str(path), "--out", str(tmp_path / "s.ply"), "--level", "200",
                 "--no-progress"]) == 2
    one_line(capsys.readouterr().err, "surface at level 200 is empty", "127.5")
    assert not (tmp_path / "s.ply").exists()
