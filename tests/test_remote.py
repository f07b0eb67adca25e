"""Stores read over HTTP: the same values and the same training as the local store, retries
through a failing server, and one-line errors for a missing, foreign or vanished store.

A real HTTP server (``http.server`` in a thread, on 127.0.0.1) serves stores written by
``distlg ingest``.
"""

import collections
import functools
import sys
import threading
import time
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from faults.helpers import one_line
from modelkit import assert_same_stream
from test_distributed import assert_two_workers_match_one_process

from distlg.cli import main
from distlg.data import remote
from distlg.data.store import StoreError, open_signal
from distlg.data.stream import REMOTE_BYTES_PER_SAMPLE, StoreChunks, StreamingSampler, plan_window, read_ahead
from distlg.geometry import PartitionGrid
from distlg.modeldir.format import ModelDir

TRAIN = ["train", "--factors", "2", "2", "--params", "400", "--no-progress", "--no-tensorboard"]


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class Flaky(Quiet):
    """Answers 500 to every other request of each path (the first, the third, ...)."""

    lock = threading.Lock()
    seen: collections.Counter = collections.Counter()
    failed = 0

    def do_GET(self) -> None:
        with self.lock:
            self.seen[self.path] += 1
            fail = self.seen[self.path] % 2 == 1
            type(self).failed += fail
        if fail:
            self.send_error(500)
        else:
            super().do_GET()


class Slow(Quiet):
    """Takes 5 s to answer for chunks."""

    def do_GET(self) -> None:
        if "/c/" in self.path:
            time.sleep(5)
        try:
            super().do_GET()
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (quietly: a traceback
            pass  # here would land in a later test's captured stderr)


@contextmanager
def serve(root: Path, handler=Quiet):
    """An HTTP server for the files under ``root``; yields (server, its base URL)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A 32x32 uint8 image in 16 chunks, a 64x64 photograph in 4, and a Zarr array that is not
    a distlg store."""
    root = tmp_path_factory.mktemp("served")
    image = np.random.default_rng(0).integers(0, 256, (32, 32), dtype=np.uint8)
    np.save(root / "image.npy", image)
    assert main(["ingest", str(root / "image.npy"), str(root / "image.zarr"), "--chunks", "8", "8",
                 "--no-progress"]) == 0
    assert main(["ingest", "builtin:camera@64x64", str(root / "camera.zarr"), "--chunks", "32", "32",
                 "--no-progress"]) == 0
    zarr.create_array(str(root / "plain.zarr"), shape=(4, 4), dtype="uint8")
    return root


@pytest.fixture(scope="module")
def url(root):
    with serve(root) as (_, base):
        yield base


@pytest.fixture(scope="module")
def local_model(root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "run"
    assert main(TRAIN + ["--signal", str(root / "image.zarr"), "--out", str(out), "--steps", "5"]) == 0
    return out / "model"


def assert_equal_models(a: Path, b: Path) -> None:
    model_a, model_b = ModelDir.open(a).load(), ModelDir.open(b).load()
    pairs = list(zip(model_a.named_tensors(), model_b.named_tensors()))
    assert pairs
    for (name, x), (other, y) in pairs:
        assert name == other and torch.equal(x, y), name


def test_a_url_reads_what_the_local_store_holds(root, url):
    local, served = open_signal(root / "image.zarr"), open_signal(f"{url}/image.zarr")
    assert served.info == local.info and served.info.fingerprint == local.info.fingerprint
    assert served.info.store == f"{url}/image.zarr"
    assert zarr.config.get("async.concurrency") == remote.CONCURRENCY
    for box in (((0, 32), (0, 32)), ((3, 21), (5, 30))):
        assert np.array_equal(served.read(box), local.read(box))
    # the streaming sampler reads chunk by chunk: the same batches
    assert_same_stream(local, served, PartitionGrid((32, 32), (2, 2)), [0, 3], 50, steps=5)


def test_training_from_a_url_gives_the_same_weights(url, local_model, tmp_path):
    out = tmp_path / "run"
    assert main(TRAIN + ["--signal", f"{url}/image.zarr", "--out", str(out), "--steps", "5"]) == 0
    assert_equal_models(local_model, out / "model")


@pytest.mark.multiprocess
def test_two_workers_from_a_url_match_one_local_process(root, url, tmp_path):
    assert_two_workers_match_one_process(str(root / "camera.zarr"), f"{url}/camera.zarr", tmp_path)


@pytest.mark.faults
def test_a_failing_server_is_retried(root, local_model, tmp_path):
    Flaky.seen.clear()
    Flaky.failed = 0
    with serve(root, Flaky) as (_, base):
        out = tmp_path / "run"
        assert main(TRAIN + ["--signal", f"{base}/image.zarr", "--out", str(out), "--steps", "5"]) == 0
    assert Flaky.failed >= 17  # zarr.json and each of the 16 chunks failed once
    assert_equal_models(local_model, out / "model")


@pytest.mark.parametrize("name", ["missing.zarr", "plain.zarr", "image.npy", "unreachable"])
def test_a_url_without_a_store_is_one_line(url, name, tmp_path, capsys):
    where = "http://127.0.0.1:9/image.zarr" if name == "unreachable" else f"{url}/{name}"
    capsys.readouterr()
    assert main(TRAIN + ["--signal", where, "--out", str(tmp_path / "run"), "--steps", "1"]) == 2
    one_line(capsys.readouterr().err, where)
    assert not (tmp_path / "run" / "model").exists()


def test_a_server_that_goes_away_is_one_line_not_a_hang(root):
    with serve(root) as (server, base):
        signal = open_signal(f"{base}/image.zarr")
        server.shutdown()
        server.server_close()
        t0 = time.perf_counter()
        with pytest.raises(StoreError) as caught:
            signal.read(((0, 16), (0, 16)))
    assert time.perf_counter() - t0 < 60
    message = str(caught.value)
    assert "\n" not in message and f"{base}/image.zarr" in message and "c/" in message


def test_a_server_that_stops_answering_times_out(root, monkeypatch):
    monkeypatch.setattr(remote, "TIMEOUT_S", 0.5)
    monkeypatch.setattr(remote, "TRIES", 2)
    monkeypatch.setattr(remote, "BACKOFF_S", 0.05)
    with serve(root, Slow) as (_, base):
        signal = open_signal(f"{base}/image.zarr")
        t0 = time.perf_counter()
        with pytest.raises(StoreError, match="c/.* after 2 tries"):
            signal.read(((0, 8), (0, 8)))
        assert time.perf_counter() - t0 < 3


def test_without_aiohttp_the_extra_is_named(url, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "aiohttp", None)
    with pytest.raises(remote.RemoteError, match=r"pip install 'distlg\[remote\]'"):
        open_signal(f"{url}/image.zarr")
    capsys.readouterr()
    assert main(TRAIN + ["--signal", "https://example.invalid/clip.zarr", "--out",
                         str(tmp_path / "run"), "--steps", "1"]) == 2
    one_line(capsys.readouterr().err, "reading https:// stores needs `pip install 'distlg[remote]'`")


class Counting(Quiet):
    """Holds each chunk request ``delay`` seconds and records the most answered at once."""

    lock = threading.Lock()
    now = most = 0
    delay = 0.05

    def do_GET(self) -> None:
        if "/c/" not in self.path:
            return super().do_GET()
        cls = type(self)
        with cls.lock:
            cls.now += 1
            cls.most = max(cls.most, cls.now)
        try:
            time.sleep(cls.delay)
            super().do_GET()
        finally:
            with cls.lock:
                cls.now -= 1


def test_a_remote_store_is_read_chunks_ahead_in_order_within_the_budget(root):
    local = open_signal(root / "image.zarr")
    grid = PartitionGrid((32, 32), (2, 2))
    with serve(root, Counting) as (_, base):
        served = open_signal(f"{base}/image.zarr")
        assert read_ahead(local, 4 << 30, 64) == 1  # local stores read as before
        assert read_ahead(served, 4 << 30, 64) == remote.CONCURRENCY
        assert read_ahead(served, 4 * 64 * 3, 64) == 3  # a quarter of the budget at most
        chunks = [(c, ((8 * (c // 4), 8 * (c // 4) + 8), (8 * (c % 4), 8 * (c % 4) + 8)))
                  for c in range(16)]
        Counting.most, Counting.delay = 0, 0.05
        blocks = list(StoreChunks(served, ahead=4).read(chunks))
        assert 1 < Counting.most <= 4
        for (_, box), block in zip(chunks, blocks):
            assert np.array_equal(block, local.read(box))
        # the sampler reads ahead from a remote store: the batches are the local store's
        Counting.delay = 0.0
        samplers = [StreamingSampler(s, grid, [0, 1, 2, 3], 4, seed=1, window=3) for s in (local, served)]
        try:
            assert (samplers[0].ahead, samplers[1].ahead) == (1, remote.CONCURRENCY)
            for step in range(7):
                assert torch.equal(samplers[0].batch(step).values, samplers[1].batch(step).values)
        finally:
            for sampler in samplers:
                sampler.close()
    # chunks from a network are read a quarter as often, where the budget allows
    args = (1 << 30, 10 * 10_000 * 256, 0, 10_000, 3, 1 << 20)  # 10 windows at 256 B/sample
    assert plan_window(*args, bytes_per_sample=REMOTE_BYTES_PER_SAMPLE) == 40 == 4 * plan_window(*args)


def test_a_server_that_goes_away_during_read_ahead_is_one_line(root, monkeypatch):
    monkeypatch.setattr(remote, "BACKOFF_S", 0.05)
    with serve(root) as (server, base):
        signal = open_signal(f"{base}/image.zarr")
        server.shutdown()
        server.server_close()
        chunks = [(c, ((8 * (c // 4), 8 * (c // 4) + 8), (0, 8))) for c in range(0, 16, 4)]
        with pytest.raises(StoreError) as caught:
            list(StoreChunks(signal, ahead=3).read(chunks))
    one_line(str(caught.value), f"{base}/image.zarr", "could not read c/0/0")


def test_a_model_directory_over_http_renders_what_the_local_one_renders(local_model, tmp_path, capsys):
    """``info`` and ``render`` of a model served over HTTP read its root document, checksums
    and the shards' byte ranges through the store layer; the region equals the local render."""
    region = ["--region", "4:20,8:30"]
    assert main(["render", str(local_model), *region, "--out", str(tmp_path / "here.npy"),
                 "--no-progress"]) == 0
    with serve(local_model.parent) as (_, base):
        assert main(["info", f"{base}/model"]) == 0
        assert "distlg-model version 2" in capsys.readouterr().out
        assert main(["render", f"{base}/model", *region, "--out", str(tmp_path / "there.npy"),
                     "--no-progress"]) == 0
        assert main(["crop", f"{base}/model", f"{base}/cropped", "--keep", "0:16"]) == 2
        one_line(capsys.readouterr().err, "not to http://")
    assert np.array_equal(np.load(tmp_path / "here.npy"), np.load(tmp_path / "there.npy"))
