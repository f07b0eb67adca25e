"""Model directories of format 2: shards of partitions in a Zarr v3 group.

The codec against zarr-python both ways; whole shards per worker; both formats round-trip; a
crop across shard boundaries keeps its region bit-identical and drops what it drops; every
kind of tampering is one line.
"""

import json
import shutil

import numpy as np
import pytest
import torch
import zarr
from faults.helpers import one_line
from modelkit import random_model, stored_partitions

from distlg.cli import main
from distlg.geometry import PartitionGrid, block_shape
from distlg.modeldir.crop import crop, select
from distlg.modeldir.export import export
from distlg.modeldir.format import ModelDir
from distlg.modeldir.location import Location
from distlg.modeldir.shards import EMPTY, ShardedArray, ShardGrid, decode, encode, owners
from distlg.nn.model import INR
from distlg.rendering.render import render


def zarr_array(path, factors, block, width):
    from zarr.codecs import BytesCodec, Crc32cCodec

    return zarr.create_array(str(path), shape=tuple(factors) + (width,), dtype="float32",
                             chunks=(1,) * len(factors) + (width,), shards=tuple(block) + (width,),
                             serializer=BytesCodec(), compressors=Crc32cCodec(), fill_value=0)


@pytest.mark.parametrize("factors, block", [((5, 6, 3), (2, 4, 3)), ((7,), (4,)), ((3, 4), (3, 4))])
def test_the_codec_writes_what_zarr_reads(tmp_path, factors, block):
    width = 5
    rng = np.random.default_rng(0)
    values = rng.standard_normal(tuple(factors) + (width,)).astype(np.float32)
    present = rng.random(factors) > 0.3
    shards = ShardGrid(factors, block)
    array = ShardedArray(Location(tmp_path / "a", writable=True), shards, width)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "zarr.json").write_bytes(array.metadata())
    flat_values, flat_present = values.reshape(-1, width), present.ravel()
    for shard in range(int(np.prod(shards.shards))):
        pids = shards.partitions(shard)
        inside = pids >= 0
        v = np.zeros((shards.slots, width), np.float32)
        p = np.zeros(shards.slots, bool)
        v[inside], p[inside] = flat_values[pids[inside]], flat_present[pids[inside]]
        array.write_shard(shard, v, p)
    back = zarr.open_array(str(tmp_path / "a"))[...]
    assert np.array_equal(back, np.where(present[..., None], values, 0))


def test_the_codec_reads_what_zarr_writes(tmp_path):
    factors, block, width = (4, 6), (2, 4), 3
    values = np.arange(np.prod(factors) * width, dtype=np.float32).reshape(factors + (width,))
    zarr_array(tmp_path / "z", factors, block, width)[...] = values
    shards = ShardGrid(factors, block)
    array = ShardedArray(Location(tmp_path / "z"), shards, width)
    for shard in range(int(np.prod(shards.shards))):
        got, present, crcs = array.read_shard(shard)
        pids = shards.partitions(shard)
        assert np.array_equal(present, pids >= 0)  # zarr writes every in-grid chunk
        assert np.array_equal(got[pids >= 0], values.reshape(-1, width)[pids[pids >= 0]])
        slots = np.flatnonzero(pids >= 0)[::2]
        part, part_crcs = array.read_slots(shard, slots)  # by byte range
        assert np.array_equal(part, got[slots]) and np.array_equal(part_crcs, crcs[slots])


def test_encode_decode_round_trip_and_absent_slots():
    values = np.random.default_rng(1).standard_normal((6, 4)).astype(np.float32)
    present = np.array([1, 0, 1, 1, 0, 0], bool)
    data, crcs = encode(values, present)
    back, held, stored = decode(data, 6, 4, np.float32, "shard")
    assert np.array_equal(held, present) and np.array_equal(back[present], values[present])
    assert not back[~present].any() and np.array_equal(stored[present], crcs)
    index = np.frombuffer(data[-(16 * 6 + 4):-4], dtype="<u8").reshape(6, 2)
    assert (index[~present] == EMPTY).all()


def test_blocks_are_compact_and_workers_own_whole_shards():
    assert block_shape((100, 100, 100), 4096) == (16, 16, 16)
    assert block_shape((3, 100), 64) == (3, 16)
    grid = PartitionGrid((48, 64, 64), (12, 16, 16))
    for workers in (1, 2, 3, 5):
        shards, parts = owners(grid, workers)
        assert sorted(p for ps in parts for p in ps) == list(range(grid.num_partitions))
        per_shard = [set(shards.locate(ps)[0].tolist()) for ps in parts]
        assert all(not (a & b) for i, a in enumerate(per_shard) for b in per_shard[i + 1:])
        sizes = [len(p) for p in parts]
        assert max(sizes) - min(sizes) <= shards.slots  # balanced within a shard


@pytest.mark.parametrize("workers", [1, 2])
def test_both_formats_round_trip(tmp_path, workers):
    path = random_model(tmp_path / "m", (12, 16, 20), (3, 4, 5), "video", seed=4, workers=workers)
    grid = PartitionGrid((12, 16, 20), (3, 4, 5))
    reference = INR(ModelDir.open(path).arch, range(grid.num_partitions), seed=4)
    loaded = ModelDir.open(path).load()
    for (name, a), (_, b) in zip(reference.named_tensors(), loaded.named_tensors()):
        assert torch.equal(a, b), name
    files = export(path, tmp_path / "files", fmt="safetensors")
    back = export(tmp_path / "files", tmp_path / "back")  # format 1 -> 2
    assert files.version == 1 and back.version == 2
    for md in (files, back):
        assert all(torch.equal(a, b) for (_, a), (_, b) in zip(reference.named_tensors(),
                                                               md.load().named_tensors()))
    assert np.array_equal(render(back), render(path))


def _inodes(path):
    return {p.relative_to(path): p.stat().st_ino for p in (path / "local").rglob("*") if p.is_file()}


def test_a_crop_across_shard_boundaries_keeps_its_region_bit_identical(tmp_path):
    path = random_model(tmp_path / "m", (12, 32, 32), (3, 8, 8), "video", workers=2)
    md = ModelDir.open(path)
    assert np.prod(md.shards.shards) > 4  # several shards, cut by the region below
    region = ((0, 8), (4, 20), (0, 32))
    kept = select(md, keep=[region])
    reference = render(path, region)
    report = crop(path, kept, tmp_path / "c")
    cropped = ModelDir.open(tmp_path / "c")
    assert cropped.partition_ids == kept == report.kept
    assert np.array_equal(render(cropped, region), reference)
    assert cropped.params()["local"] * md.grid.num_partitions == md.params()["local"] * len(kept)
    before, after = _inodes(path), _inodes(tmp_path / "c")
    shared = {k for k in after if before.get(k) == after[k]}
    assert shared and len(shared) < len(after)  # whole shards linked, the cut ones rewritten
    shutil.rmtree(tmp_path / "c")
    crop(path, kept)  # in place
    assert np.array_equal(render(path, region), reference)
    assert ModelDir.open(path).partition_ids == kept == stored_partitions(path)  # bytes gone too


@pytest.fixture
def shards_model(tmp_path):
    return random_model(tmp_path / "m", (8, 16, 16), (2, 4, 4), "video", workers=2)


def _shard_path(model, shard=0):
    md = ModelDir.open(model)
    return model / "local" / md.shards.key(shard)


def _flip_chunk(model):
    path = _shard_path(model)
    data = bytearray(path.read_bytes())
    data[5] ^= 1
    path.write_bytes(bytes(data))


def _truncate(model):
    path = _shard_path(model)
    path.write_bytes(path.read_bytes()[:-10])


def _remove(model):
    _shard_path(model).unlink()


def _foreign(model):
    other = random_model(model.parent / "other", (8, 16, 16), (2, 4, 4), "video", workers=2, seed=9)
    shutil.copyfile(_shard_path(other), _shard_path(model))


def _swap(model):
    shutil.copyfile(_shard_path(model, 1), _shard_path(model, 0))


def _index(model):
    """An index entry pointed at another chunk, its checksum recomputed."""
    from distlg.modeldir.shards import crc32c

    path = _shard_path(model)
    slots = ModelDir.open(model).shards.slots
    data = bytearray(path.read_bytes())
    index = np.frombuffer(bytes(data[-(16 * slots + 4):-4]), dtype="<u8").reshape(-1, 2).copy()
    index[[0, 1]] = index[[1, 0]]
    raw = index.tobytes()
    data[-(16 * slots + 4):] = raw + np.asarray([crc32c(raw)], dtype="<u4").tobytes()
    path.write_bytes(bytes(data))


def _codes(model):
    z = zarr.open_array(str(model / "partitions"), mode="r+")
    values = z[...]
    values.flat[0] ^= np.uint64(1)
    z[...] = values


def _global(model):
    other = random_model(model.parent / "other", (8, 16, 16), (2, 4, 4), "video", workers=2, seed=9)
    shutil.rmtree(model / "global")
    shutil.copytree(other / "global", model / "global")


def _global_unchecked(model):
    """Another model's global tensors, and the root's checksum of them deleted."""
    _global(model)
    root = json.loads((model / "zarr.json").read_text())
    del root["attributes"]["distlg"]["global"]["crc32c"]
    (model / "zarr.json").write_text(json.dumps(root))


def _metadata(model):
    meta = json.loads((model / "local" / "zarr.json").read_text())
    meta["shape"][-1] += 1
    (model / "local" / "zarr.json").write_text(json.dumps(meta))


TAMPER = {
    "chunk": (_flip_chunk, "fails its checksum"),
    "truncated": (_truncate, "truncated|fails its checksum"),
    "missing": (_remove, "is missing"),
    "foreign": (_foreign, "do not match the model's checksum"),
    "swapped": (_swap, "do not match the model's checksum"),
    "index": (_index, "do not match the model's checksum"),
    "checksums": (_codes, "do not match the model's checksum"),
    "global": (_global, "global tensors do not match"),
    "global unchecked": (_global_unchecked, "lacks the global tensors' checksum"),
    "metadata": (_metadata, "not the .* array this model's manifest implies"),
}


@pytest.mark.faults
@pytest.mark.parametrize("fault", sorted(TAMPER))
def test_tampered_shards_and_indexes_are_one_line(shards_model, fault, tmp_path, capsys):
    import re

    spoil, needle = TAMPER[fault]
    spoil(shards_model)
    out = tmp_path / "r.npy"
    for argv in (["render", str(shards_model), "--out", str(out), "--no-progress"],
                 ["crop", str(shards_model), str(tmp_path / "c"), "--keep", "0:4", "--no-progress"],
                 ["export", str(shards_model), str(tmp_path / "e"), "--no-progress"]):
        assert main(argv) == 2, argv
        line = one_line(capsys.readouterr().err)
        assert re.search(needle, line), line
    assert not out.exists() and not (tmp_path / "c").exists() and not (tmp_path / "e").exists()


def test_info_reads_a_small_root_document(shards_model, capsys):
    assert main(["info", str(shards_model)]) == 0
    out = capsys.readouterr().out
    assert "distlg-model version 2, shards of" in out
    assert "32 of 32 present" in out and "stored" in out


def test_info_export_and_crop_load_no_torch(shards_model, tmp_path):
    """They move checked bytes (numpy and zarr), never tensors: no second of importing torch."""
    import subprocess
    import sys

    model, out = str(shards_model), str(tmp_path)
    probe = ("import contextlib, io, sys\nfrom distlg.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n"
             f"    assert main(['info', {model!r}]) == 0\n"
             f"    assert main(['export', {model!r}, {out + '/e'!r}, '--no-progress']) == 0\n"
             f"    assert main(['crop', {model!r}, {out + '/c'!r}, '--keep', '0:4', '--no-progress']) == 0\n"
             "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_version_1_directories_load_and_crop_as_before(tmp_path):
    path = random_model(tmp_path / "v1", (12, 16), (3, 4), "image", fmt="safetensors")
    md = ModelDir.open(path)
    reference = render(md, ((0, 8), (0, 8)))
    crop(path, select(md, keep=[((0, 8), (0, 8))]), tmp_path / "c")
    assert ModelDir.open(tmp_path / "c").version == 1
    assert np.array_equal(render(tmp_path / "c", ((0, 8), (0, 8))), reference)


@pytest.mark.faults
def test_a_version_1_file_copied_over_another_is_refused(tmp_path, capsys):
    import hashlib

    path = random_model(tmp_path / "v1", (12, 16), (3, 4), "image", fmt="safetensors")
    data = (path / "part-000001.safetensors").read_bytes()
    (path / "part-000002.safetensors").write_bytes(data)
    doc = json.loads((path / "manifest.json").read_text())
    doc["partitions"][2]["sha256"] = hashlib.sha256(data).hexdigest()
    (path / "manifest.json").write_text(json.dumps(doc))
    assert main(["render", str(path), "--out", str(tmp_path / "r.npy"), "--no-progress"]) == 2
    one_line(capsys.readouterr().err, "holds partition 1, not 2")


@pytest.mark.multiprocess
def test_two_workers_write_whole_shards_that_one_process_resumes(tmp_path):
    """At 8x8 partitions each of 2 workers owns 8 shards of 2x2 partitions and writes them
    alone; resuming that checkpoint in one process reaches the model one process trains."""
    from test_distributed import CONFIG, assert_same_model, losses, run

    config = CONFIG.replace("factors: [4, 4]", "factors: [8, 8]")
    import test_distributed

    saved = test_distributed.CONFIG
    test_distributed.CONFIG = config
    try:
        reference = run(tmp_path, 1, "ref", "--steps", "10")
        run(tmp_path, 2, "run", "--steps", "5", "--checkpoint-every", "5")
        checkpoint = ModelDir.open(tmp_path / "run" / "checkpoints" / "step-00000005")
        assert checkpoint.shards.block == (2, 2) and checkpoint.training["world_size"] == 2
        resumed = run(tmp_path, 1, "run", "--steps", "10", "--resume")
    finally:
        test_distributed.CONFIG = saved
    assert_same_model(reference / "model", resumed / "model")
    assert losses(resumed)[10] == pytest.approx(losses(reference)[10], rel=1e-5)
