"""`distlg pack`: per-worker tar shards of a store, and training that streams from them.

The pack holds each worker's chunks in its streaming sampler's order, training from it gives
the weights streaming from the store gives (one process and two workers), and a pack made for
another run, a damaged one or an interrupted one fails in one line.
"""

from __future__ import annotations

import functools
import io
import json
import math
import os
import shutil
import subprocess
import sys
import tarfile
import threading
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from faults.helpers import one_line, snapshot

from distlg.cli import main
from distlg.config import Config
from distlg.data import pack as packing
from distlg.data.draws import shard_region
from distlg.data.store import open_store
from distlg.data.stream import StoreChunks, StreamingSampler
from distlg.geometry import shard
from distlg.modeldir.format import ModelDir
from distlg.training.plan import make_grid

BUDGET = "3.5e-6"
"""GiB: under the 4 KiB image, so the store streams too; a few steps per window."""
TRAIN = ["--samples-per-partition", "8", "--params", "2000", "--steps", "5", "--seed", "3",
         "--memory-budget-gib", BUDGET, "--threads", "1", "--no-tensorboard", "--no-progress"]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pack") / "camera.zarr"
    assert main(["ingest", "builtin:camera@64x64", str(path), "--chunks", "16", "16",
                 "--no-progress"]) == 0
    return path


def make_pack(store: Path, out: Path, *args: str) -> Path:
    assert main(["pack", str(store), str(out), "--no-progress", *args]) == 0
    return out


def tar_samples(path: Path) -> list[tuple[dict, np.ndarray]]:
    """(json, values) of every sample of one tar shard, read with tarfile alone."""
    members: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            key, ext = m.name.split(".", 1)
            members.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return [(json.loads(s["json"]), np.load(io.BytesIO(s["npy"]))) for s in members.values()]


def train(tmp: Path, name: str, store: Path, *args: str) -> Path:
    out = tmp / name
    assert main(["train", "--signal", str(store), "--out", str(out), *TRAIN, *args]) == 0
    return out / "model"


def weights(model: Path) -> list[torch.Tensor]:
    net = ModelDir.open(model).load()
    return [t for _, t in net.named_tensors()]


class Recording(StoreChunks):
    """The store's chunks, noting which the sampler asks for, in order."""

    def __init__(self, signal):
        super().__init__(signal)
        self.windows: list[list[int]] = []

    def read(self, chunks):
        self.windows.append([c for c, _ in chunks])
        return super().read(chunks)


def test_each_worker_gets_its_shards_chunks_in_the_samplers_order(store, tmp_path):
    # 3 workers of a 2x2 grid: one holds two partitions; halos reach into neighbouring chunks
    out = make_pack(store, tmp_path / "p", "--workers", "3", "--overlaps", "4",
                    "--shard-mb", "0.002")
    manifest = json.loads((out / "pack.json").read_text())
    signal = open_store(store)
    grid = make_grid(Config().replace(overlaps=[4]), signal)
    assert manifest["workers"] == 3 and manifest["grid"]["factors"] == list(grid.factors)
    assert manifest["grid"]["overlaps"] == [4, 4]
    assert sorted(p.name for p in out.iterdir()) == ["pack.json"] + sorted(
        f["name"] for s in manifest["shards"] for f in s["files"])
    for rank, pids in enumerate(shard(grid, 3)):
        entry = manifest["shards"][rank]
        assert len(entry["files"]) > 1  # several shards per worker, read in turn
        samples = [s for f in entry["files"] for s in tar_samples(out / f["name"])]
        assert [len(tar_samples(out / f["name"])) for f in entry["files"]] == \
            [f["chunks"] for f in entry["files"]]
        # the sampler, with a window long enough that every chunk is sampled, visits these
        spy = Recording(signal)
        sampler = StreamingSampler(signal, grid, pids, 64, window=20, source=spy)
        sampler.batch(0)
        sampler.close()
        assert [m["chunk"] for m, _ in samples] == spy.windows[0] == sampler.shard_chunks()
        assert entry["chunks"] == len(samples)
        for meta, values in samples:
            box = tuple((o, o + n) for o, n in zip(meta["origin"], meta["shape"]))
            assert box == sampler.chunk_box(meta["chunk"])
            assert values.dtype == np.uint8
            np.testing.assert_array_equal(values, signal.read(box))


def test_a_shard_that_is_not_a_box_packs_only_the_chunks_its_partitions_sample(tmp_path):
    source = tmp_path / "volume.npy"
    np.save(source, np.random.default_rng(0).integers(0, 256, (12, 16, 16), dtype=np.uint8))
    store = tmp_path / "volume.zarr"
    assert main(["ingest", str(source), str(store), "--factors", "2", "2", "2",
                 "--chunks", "2", "4", "4", "--no-progress"]) == 0
    signal = open_store(store)
    grid = make_grid(Config().replace(factors=[2], overlaps=[1]), signal)
    pids = shard(grid, 3)[0]
    assert pids == [0, 1, 2]  # an L of three partitions: its bounding box holds a fourth
    spy = Recording(signal)
    sampler = StreamingSampler(signal, grid, pids, 400, window=20, source=spy)
    sampler.batch(0)
    sampler.close()
    assert spy.windows[0] == sampler.shard_chunks()
    box = shard_region(grid, pids)
    in_box = math.prod(-(-b // c) - a // c for (a, b), c in zip(box, (2, 4, 4)))
    assert len(sampler.shard_chunks()) < in_box  # not every chunk of the bounding box


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@contextmanager
def serve(root: Path):
    """An HTTP server for the files under ``root``; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_training_from_a_pack_equals_streaming_from_the_store(store, tmp_path, capsys):
    out = make_pack(store, tmp_path / "p")
    from_store = weights(train(tmp_path, "store", store))
    assert "sampler streaming" in capsys.readouterr().out
    from_pack = weights(train(tmp_path, "pack", store, "--pack", str(out),
                              "--memory-budget-gib", "4"))  # a pack streams whatever the budget
    assert "sampler streaming" in capsys.readouterr().out
    assert all(torch.equal(a, b) for a, b in zip(from_store, from_pack))
    with serve(tmp_path) as url:  # over HTTP (webdataset hands the URL to curl)
        over_http = weights(train(tmp_path, "http", store, "--pack", f"{url}/p/"))
        assert main(["train", "--signal", str(store), "--pack", f"{url}/none",
                     "--out", str(tmp_path / "none"), *TRAIN]) == 2
        one_line(capsys.readouterr().err, f"{url}/none/pack.json")
    assert all(torch.equal(a, b) for a, b in zip(from_store, over_http))


@pytest.mark.multiprocess
def test_two_workers_from_a_pack_equal_one_process_from_the_store(store, tmp_path):
    out = make_pack(store, tmp_path / "p", "--workers", "2", "--shard-mb", "0.02")
    one = weights(train(tmp_path, "one", store))
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
              "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "--main_process_port", "0", "-m", "distlg", "train",
              "--signal", str(store), "--pack", str(out), "--out", str(tmp_path / "two"), *TRAIN,
              "--memory-budget-gib", "4"]
    proc = subprocess.run(launch, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "2 worker(s)" in proc.stdout and "sampler streaming" in proc.stdout
    two = weights(tmp_path / "two" / "model")
    for a, b in zip(one, two):
        assert ((a - b).abs().max() / a.abs().max()).item() <= 1e-5


def refused(capsys, argv: list[str], *words: str) -> str:
    assert main(argv) == 2
    return one_line(capsys.readouterr().err, *words)


@pytest.mark.faults
def test_a_pack_for_another_run_is_refused_in_one_line(store, tmp_path, capsys):
    two = make_pack(store, tmp_path / "two", "--workers", "2")
    fine = make_pack(store, tmp_path / "fine", "--factors", "4", "4")
    run = ["train", "--signal", str(store), "--out", str(tmp_path / "run"), *TRAIN]
    refused(capsys, run + ["--pack", str(two)], "2 worker(s)", "has 1")
    refused(capsys, run + ["--pack", str(fine)], "factors 4x4", "uses 2x2")
    (fine / "pack.json").unlink()
    refused(capsys, run + ["--pack", str(fine)], str(fine), "has no pack.json")
    refused(capsys, ["pack", str(store), str(tmp_path / "x"), "--workers", "5"], "5 workers")
    (tmp_path / "file").write_text("mine")
    before = snapshot(tmp_path)
    refused(capsys, ["pack", str(store), str(tmp_path / "file" / "out")], "distlg pack: error:")
    assert snapshot(tmp_path) == before


def test_every_option_of_pack_has_help():
    from distlg.cli import build_parser

    for action in build_parser()._subparsers._group_actions[0].choices["pack"]._actions:
        assert action.help, f"{action.option_strings or action.dest} has no help"


@pytest.mark.faults
@pytest.mark.parametrize("cut", ["inside a member", "between samples"])
def test_a_truncated_tar_shard_is_named_in_one_line(store, tmp_path, capsys, cut):
    out = make_pack(store, tmp_path / "p")
    (tar,) = out.glob("*.tar")
    size = 5000 if cut == "inside a member" else 10240  # 10240: after the first sample
    os.truncate(tar, size)
    assert main(["train", "--signal", str(store), "--pack", str(out),
                 "--out", str(tmp_path / "run"), *TRAIN]) == 2
    one_line(capsys.readouterr().err, str(tar))


@pytest.mark.faults
def test_pack_refuses_an_existing_out_and_leaves_nothing_when_interrupted(store, tmp_path,
                                                                         capsys, monkeypatch):
    out = make_pack(store, tmp_path / "p")
    before = snapshot(tmp_path)
    refused(capsys, ["pack", str(store), str(out)], str(out), "exists")
    assert snapshot(tmp_path) == before
    shutil.rmtree(out)
    real, calls = packing._encode, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(packing, "_encode", interrupted)
    assert main(["pack", str(store), str(out), "--no-progress"]) == 130
    assert len(calls) == 5 and list(tmp_path.iterdir()) == []
