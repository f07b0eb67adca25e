"""Sharded stores (``distlg ingest --shard``): exact round trips, shards of whole partitions and
chunks, the ``auto`` rule, whole shard-rows written once and resumed, training that cannot tell
a sharded store from an unsharded one, and one-line refusals of bad shard shapes."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from faults.helpers import one_line, snapshot
from modelkit import assert_same_stream
from test_remote import Quiet, serve
from test_store import Interrupt, generated_volume, interrupt_after

from distlg import cli
from distlg.data import store
from distlg.data.ingest import IngestError, IngestOptions, ingest, plan_shards
from distlg.data.store import open_signal
from distlg.geometry import PartitionGrid
from distlg.modeldir.format import ModelDir

FACTORS = ["2", "4", "4"]  # partitions of 4x8x8 on an 8x32x32 video
CHUNKS = ["2", "8", "8"]
SHARDS = ["4", "16", "32"]  # 2x2x4 = 16 chunks, 1x2x4 partitions per shard


@pytest.fixture
def video(tmp_path):
    """A small random RGB video as .npy (8 frames of 32x32) and its values."""
    frames = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    np.save(tmp_path / "clip.npy", frames)
    return tmp_path / "clip.npy", frames


def ingest_cli(source, path, *more: str) -> int:
    return cli.main(["ingest", str(source), str(path), "--kind", "video", "--factors", *FACTORS,
                     "--chunks", *CHUNKS, "--no-progress", *more])


def zarr_json(path) -> dict:
    return json.loads((path / "zarr.json").read_text())


def objects(path) -> int:
    return sum(1 for p in (path / "c").rglob("*") if p.is_file())


# -- layout and round trip -------------------------------------------------------------------------
def test_sharded_store_reads_back_the_source_and_the_unsharded_store(tmp_path, video, capsys):
    source, frames = video
    assert ingest_cli(source, tmp_path / "plain.zarr") == 0
    assert ingest_cli(source, tmp_path / "sharded.zarr", "--shard", *SHARDS) == 0
    assert "chunks 2x8x8x3 in shards of 4x16x32 (partitions 2x4x4 of 4x8x8)" in capsys.readouterr().out
    sharded, plain = open_signal(tmp_path / "sharded.zarr"), open_signal(tmp_path / "plain.zarr")
    assert np.array_equal(np.asarray(sharded.data[...]), frames)
    assert np.array_equal(np.asarray(sharded.data[...]), np.asarray(plain.data[...]))
    box = ((1, 7), (5, 30), (3, 17))  # a patch across shard and chunk boundaries
    assert np.array_equal(sharded.read(box), plain.read(box))
    assert sharded.info == plain.info
    # the streaming sampler reads chunk by chunk
    assert_same_stream(plain, sharded, PartitionGrid((8, 32, 32), (2, 4, 4)), [0, 5, 31], 40, steps=3)

    meta = zarr_json(tmp_path / "sharded.zarr")
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [4, 16, 32, 3]
    (codec,) = meta["codecs"]
    assert codec["name"] == "sharding_indexed"
    assert codec["configuration"]["chunk_shape"] == [2, 8, 8, 3]
    assert "codecs" in codec["configuration"]  # the chunks inside stay Blosc-compressed
    assert [c["name"] for c in codec["configuration"]["codecs"]][-2:] == ["blosc", "crc32c"]
    chunking = store.info(store.open_array(tmp_path / "sharded.zarr"))["chunking"]
    assert chunking["shards"] == [4, 16, 32]
    assert all(s % p == 0 and s % c == 0 for s, p, c in
               zip(chunking["shards"], chunking["part_shape"], chunking["chunks"]))
    assert objects(tmp_path / "sharded.zarr") == 2 * 2 * 1
    assert objects(tmp_path / "plain.zarr") == 4 * 4 * 4


def test_auto_on_a_small_store_is_one_shard(tmp_path, video):
    source, frames = video
    assert ingest_cli(source, tmp_path / "auto.zarr", "--shard", "auto") == 0
    array = store.open_array(tmp_path / "auto.zarr")
    assert array.shards == (8, 32, 32, 3) and array.chunks == (2, 8, 8, 3)
    assert store.info(array)["chunking"]["shards"] == [8, 32, 32]
    assert np.array_equal(np.asarray(open_signal(tmp_path / "auto.zarr").data[...]), frames)


class Ranged(Quiet):
    """Answers a Range header (bytes=A-B, bytes=-N) with those bytes, as object stores do."""

    ranges: list[str] = []

    def do_GET(self) -> None:
        header, path = self.headers.get("Range"), Path(self.translate_path(self.path))
        if not header or not path.is_file():
            return super().do_GET()
        self.ranges.append(header)
        data = path.read_bytes()
        first, last = header.removeprefix("bytes=").split("-")
        start = len(data) - int(last) if not first else int(first)
        stop = len(data) if not first or not last else int(last) + 1
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {start}-{stop - 1}/{len(data)}")
        self.send_header("Content-Length", str(stop - start))
        self.end_headers()
        self.wfile.write(data[start:stop])


@pytest.mark.parametrize("handler", [Ranged, Quiet], ids=["ranges", "whole-objects"])
def test_a_sharded_store_reads_the_same_over_http(tmp_path, video, handler):
    """Shards are read in byte ranges (index, then chunks); a server that ignores Range headers
    (Python's http.server) sends whole shards, which the reader cuts."""
    source, frames = video
    assert ingest_cli(source, tmp_path / "s.zarr", "--shard", *SHARDS) == 0
    Ranged.ranges.clear()
    with serve(tmp_path, handler) as (_, base):
        served = open_signal(f"{base}/s.zarr")
        assert np.array_equal(np.asarray(served.data[...]), frames)
        assert np.array_equal(served.read(((1, 7), (5, 30), (3, 17))), frames[1:7, 5:30, 3:17])
    assert bool(Ranged.ranges) == (handler is Ranged)


# -- the auto rule, without data -------------------------------------------------------------------
@pytest.mark.parametrize("shape,part,chunks,value_bytes", [
    ((250, 272, 640), (50, 34, 32), (50, 68, 64), 3),         # bikes: 125 MiB, one shard
    ((1632, 1632, 1632), (204, 204, 204), (102, 102, 102), 1),  # the benchmark volume
    ((1600, 1600, 1600), (32, 32, 32), (64, 96, 96), 1),      # volume defaults
    ((300, 1080, 1920), (50, 32, 32), (50, 64, 64), 3),       # HD video
    ((3000, 2160, 3840), (50, 32, 32), (50, 64, 64), 3),      # 4K video, 75 GB
    ((10_000_000,), (312_500,), (312_500,), 4),               # long float audio
    ((400_000_000,), (312_500,), (312_500,), 4),              # 1.6 GB of audio
    ((7, 33, 45), (4, 11, 15), (2, 11, 30), 2),               # unaligned user chunks
])
def test_auto_shards_are_blocks_of_whole_partitions_of_64_to_256_mib(shape, part, chunks, value_bytes):
    shards = plan_shards(shape, part, chunks, value_bytes, "auto")
    unit = [math.lcm(p, c) for p, c in zip(part, chunks)]
    covering = [math.ceil(d / u) * u for d, u in zip(shape, unit)]
    assert all(s % u == 0 and u <= s <= cover for s, u, cover in zip(shards, unit, covering))
    nbytes = math.prod(shards) * value_bytes
    if math.prod(covering) * value_bytes <= 256 << 20:
        assert list(shards) == covering  # small enough: one shard
    else:
        assert 128 << 20 <= nbytes <= 256 << 20 or list(shards) == unit
    # the inner axes fill first: an axis grows only once every later axis spans the store
    for axis, (s, u) in enumerate(zip(shards, unit)):
        if s > u:
            assert list(shards[axis + 1:]) == covering[axis + 1:]
    assert store.shard_row_bytes(shape, shards, value_bytes) <= store.SHARD_ROW_LIMIT


def test_auto_refuses_a_shard_row_over_the_memory_limit():
    with pytest.raises(IngestError, match="shard-row .*2.2 GiB.*2 GiB.*fewer rows"):
        plan_shards((5000, 4000, 4000), (50, 32, 32), (50, 64, 64), 3, "auto")


# -- writing whole shard-rows, interrupted and resumed --------------------------------------------
@pytest.mark.faults
def test_interrupted_sharded_ingest_resumes_to_the_same_store(tmp_path, monkeypatch):
    volume = generated_volume((40, 12, 12))
    np.save(tmp_path / "v.npy", volume)
    options = IngestOptions(progress=False, factors=[8, 1, 1], chunks=[5, 12, 12], shard=[10, 12, 12])
    starts: list[int] = []
    interrupt_after(monkeypatch, 2, starts)
    with pytest.raises(Interrupt):
        ingest(tmp_path / "v.npy", tmp_path / "v.zarr", options)
    assert store.info(store.open_array(tmp_path / "v.zarr"))["ingest"]["done"] == 20  # 2 shard-rows
    assert not store.is_complete(tmp_path / "v.zarr")
    monkeypatch.undo()
    interrupt_after(monkeypatch, 10**9, starts)
    assert ingest(tmp_path / "v.npy", tmp_path / "v.zarr", options).status == "resumed"
    assert starts == [0, 20]
    monkeypatch.undo()
    ingest(tmp_path / "v.npy", tmp_path / "whole.zarr", options)
    assert np.array_equal(np.asarray(open_signal(tmp_path / "v.zarr").data[...])[..., 0], volume)
    assert snapshot(tmp_path / "v.zarr") == snapshot(tmp_path / "whole.zarr")


def test_sharded_ingest_reads_and_writes_a_shard_row_at_a_time(tmp_path, monkeypatch):
    """Each write covers whole shards (so zarr never reads a shard back to merge into it)."""
    import zarr

    np.save(tmp_path / "v.npy", generated_volume((40, 12, 12)))
    writes: list[tuple] = []
    real = zarr.Array.__setitem__

    def setitem(self, selection, value):
        writes.append((selection.start, selection.stop))
        return real(self, selection, value)

    monkeypatch.setattr(zarr.Array, "__setitem__", setitem)
    ingest(tmp_path / "v.npy", tmp_path / "v.zarr",
           IngestOptions(progress=False, factors=[8, 1, 1], chunks=[5, 12, 12], shard=[10, 12, 12]))
    assert writes == [(0, 10), (10, 20), (20, 30), (30, 40)]


# -- training cannot tell ---------------------------------------------------------------------------
def test_training_from_a_sharded_store_gives_the_same_weights(tmp_path, video):
    source, _ = video
    weights = {}
    for name, more in (("plain", []), ("sharded", ["--shard", *SHARDS])):
        assert ingest_cli(source, tmp_path / f"{name}.zarr", *more) == 0
        out = tmp_path / f"run-{name}"
        assert cli.main(["train", "--signal", str(tmp_path / f"{name}.zarr"), "--out", str(out),
                         "--steps", "5", "--factors", *FACTORS, "--params", "3000",
                         "--no-progress", "--no-tensorboard"]) == 0
        model = ModelDir.open(out / "model").load()
        weights[name] = dict(model.named_tensors())
    assert weights["plain"].keys() == weights["sharded"].keys()
    for key, tensor in weights["plain"].items():
        assert torch.equal(tensor, weights["sharded"][key]), key


# -- bad shard shapes ------------------------------------------------------------------------------
@pytest.mark.parametrize("shard,words", [
    (["4", "16", "28"], ["multiple of 4 8 8", "axis 2"]),   # not whole partitions
    (["2", "16", "32"], ["multiple of 4 8 8", "axis 0"]),   # whole chunks, not partitions
    (["4", "16"], ["1 or 3 positive values"]),              # wrong number of axes
    (["0", "16", "32"], ["positive"]),
    (["-4", "16", "32"], ["positive"]),
    (["auto", "4"], ["auto"]),
    (["big"], ["auto"]),
])
def test_bad_shard_shapes_stop_with_one_line(tmp_path, video, capsys, shard, words):
    source, _ = video
    assert ingest_cli(source, tmp_path / "s.zarr", "--shard", *shard) == 2
    one_line(capsys.readouterr().err, "--shard", *words)
    assert not (tmp_path / "s.zarr").exists()


@pytest.mark.faults
def test_a_shard_row_over_two_gib_is_refused_before_reading(tmp_path, capsys):
    raw = tmp_path / "big.raw"
    with open(raw, "wb") as f:  # sparse: 3 GiB announced, nothing written
        f.truncate(3 << 30)
    assert cli.main(["ingest", str(raw), str(tmp_path / "b.zarr"), "--shape", "3072", "1024", "1024",
                     "--dtype", "uint8", "--factors", "1", "--shard", "auto", "--no-progress"]) == 2
    one_line(capsys.readouterr().err, "shard-row", "3.0 GiB")
    assert not (tmp_path / "b.zarr").exists()
