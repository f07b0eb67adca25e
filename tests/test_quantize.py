"""Quantized model directories: ``distlg export --quantize fp16|int8``.

The codes round-trip within their stated error; a Zarr reader decodes them from the arrays'
own metadata; crop, render and extend keep what they kept; a model without quantization
reads as before; bad options and tampering are one line, and nothing is written.
"""

import json
import re
import shutil

import numpy as np
import pytest
import zarr
from faults.helpers import one_line, snapshot
from modelkit import random_model

from distlg.cli import main
from distlg.config import ExtendConfig
from distlg.data.signal import Signal
from distlg.modeldir.base import local_layout
from distlg.modeldir.crop import crop, select
from distlg.modeldir.export import export
from distlg.modeldir.format import ModelDir
from distlg.modeldir.quantize import SCALES_ARRAY, Codes, QuantizeError, bound
from distlg.rendering.render import render
from distlg.training.extend import extend

SCHEMES = [("fp16", None), ("int8", "per-tensor"), ("int8", "per-partition")]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A float32 model of 4 x 8 x 8 partitions in several shards (a 2-worker run's)."""
    return random_model(tmp_path_factory.mktemp("q") / "m", (8, 32, 32), (4, 8, 8), "video",
                        workers=2)


def exported(source, tmp_path, quantize, scale):
    out = tmp_path / f"{quantize}-{scale}"
    export(source, out, quantize=quantize, scale=scale)
    return ModelDir.open(out)


def _layout_codes(dtype):
    from distlg.nn.model import Architecture

    arch = Architecture("local-global", 3, 3, hidden_layers=2, local_width=8, global_width=12)
    return Codes.make(local_layout(arch), dtype)


@pytest.mark.parametrize("dtype", ["float16", "int8"])
def test_codes_round_trip_within_their_stated_error(dtype):
    codes = _layout_codes(dtype)
    rng = np.random.default_rng(0)
    ranges = rng.uniform(1e-3, 3.0, codes.tensors)  # tensors of very different magnitudes
    values = np.concatenate([rng.uniform(-r, r, (50, b - a)) for r, (a, b, _, _) in
                             zip(ranges, codes.segments)], axis=1).astype(np.float32)
    scales = codes.scales(values) if dtype == "int8" else None
    stored = codes.encode(values, scales)
    assert stored.dtype == np.dtype(dtype) and stored.shape == (50, codes.width)
    back = codes.decode(stored, scales)
    assert (np.abs(back - values) <= bound(codes, values, scales)).all()
    if dtype == "int8":
        # the bound is tight: a half step is reached (within 5 %) by some value of each tensor
        error = np.abs(back - values)
        for t, (a, b, _, _) in enumerate(codes.segments):
            assert (error[:, a:b] / scales[:, t:t + 1]).max() > 0.45
        assert codes.planes == (2, 2, 1, 2, 1, 2, 1, 2)  # first layer and biases: two codes


def test_encode_refuses_what_it_cannot_hold():
    codes = _layout_codes("float16")
    values = np.zeros((1, codes.layout.width), np.float32)
    values[0, 3] = 1e6
    with pytest.raises(QuantizeError, match="float16's range"):
        codes.encode(values)
    int8 = _layout_codes("int8")
    values = np.ones((1, int8.layout.width), np.float32)
    with pytest.raises(QuantizeError, match="beyond its int8 scale"):
        int8.encode(values, np.full(int8.tensors, 1e-3, np.float32))


@pytest.mark.parametrize("quantize, scale", SCHEMES)
def test_quantized_export_round_trips_within_its_stated_error(source, tmp_path, quantize, scale):
    md, q = ModelDir.open(source), exported(source, tmp_path, quantize, scale)
    assert q.quantization.name == quantize + (f" {scale}" if scale else "")
    pids = np.asarray(md.partition_ids)
    truth, back = md.read_rows(pids), q.read_rows(pids)
    codes = q.weights.codes
    scales = None  # as export measured them: per tensor over all partitions, or per partition
    if quantize == "int8":
        scales = codes.scales(truth) if scale == "per-partition" else np.asarray(q.quantization.local_scales)
        if scale != "per-partition":
            assert np.array_equal(scales, codes.scales(truth).max(axis=0))
    assert (np.abs(back - truth) <= bound(codes, truth, scales)).all()
    assert not np.array_equal(back, truth)  # it did quantize
    glob_t, glob_q = md.read_global(), q.read_global()
    for name in glob_t:
        error = (glob_q[name] - glob_t[name]).abs().max().item()
        limit = (glob_t[name].abs().max().item() * 2 ** -11 + 1e-7 if quantize == "fp16" else
                 q.quantization.global_scales[list(glob_t).index(name)] * 0.5 * (1 + 1e-5))
        assert error <= limit, name
    assert q.storage()[1] < (0.6 if quantize == "fp16" else 0.4) * md.storage()[1]


@pytest.mark.filterwarnings("ignore:Combining a `sharding_indexed` codec")
@pytest.mark.parametrize("quantize, scale", SCHEMES)
def test_a_zarr_reader_decodes_the_arrays_from_their_own_metadata(source, tmp_path, quantize, scale):
    q = exported(source, tmp_path, quantize, scale)
    local = zarr.open_array(str(q.path / "local"), mode="r")
    attrs = local.attrs["distlg"]["quantization"]
    assert local.dtype == np.dtype(q.quantization.dtype) and attrs["dtype"] == str(local.dtype)
    pid = 37
    index = np.unravel_index(pid, q.grid.factors)
    chunk = local[index]
    if scale == "per-partition":
        scales = zarr.open_array(str(q.path / SCALES_ARRAY), mode="r")[index]
    else:
        scales = attrs.get("scales")
    values, start = [], 0
    for _name, shape, planes in attrs["codes"]:  # the rule, as written in the attributes
        n = int(np.prod(shape))
        code = chunk[start:start + n].astype(np.float64)
        if planes == 2:
            code = 256 * code + chunk[start + n:start + 2 * n]
        values.append(code if scales is None else code * scales[len(values)])
        start += planes * n
    assert start == attrs["width"] == local.shape[-1]
    expected = q.read_rows(np.asarray([pid]))[0]
    assert np.allclose(np.concatenate(values), expected, rtol=1e-6, atol=0)
    glob = zarr.open_array(str(q.path / "global"), mode="r")
    assert glob.dtype == np.dtype(q.quantization.dtype)
    root = json.loads((q.path / "zarr.json").read_text())["attributes"]["distlg"]
    assert root["quantization"]["dtype"] == q.quantization.dtype
    assert root["quantization"]["local"]["codes"] == attrs["codes"]


@pytest.mark.parametrize("quantize, scale", SCHEMES)
def test_crop_of_a_quantized_model_keeps_the_region_bit_identical(source, tmp_path, quantize, scale):
    q = exported(source, tmp_path, quantize, scale)
    region = ((0, 4), (6, 20), (0, 32))
    reference = render(q.path, region)
    kept = select(q, keep=[region])
    crop(q.path, kept, tmp_path / "c")
    cropped = ModelDir.open(tmp_path / "c")
    assert cropped.quantization == q.quantization and cropped.partition_ids == kept
    assert np.array_equal(render(cropped, region), reference)
    assert np.array_equal(cropped.read_rows(np.asarray(kept)), q.read_rows(np.asarray(kept)))
    crop(q.path, kept)  # in place
    assert np.array_equal(render(q.path, region), reference)
    assert ModelDir.open(q.path).storage()[1] < cropped.storage()[1] * 1.01


def test_a_model_without_quantization_reads_as_before(source, tmp_path):
    md = ModelDir.open(source)
    assert md.quantization is None and "quantization" not in json.loads(
        (source / "zarr.json").read_text())["attributes"]["distlg"]
    meta = json.loads((source / "local" / "zarr.json").read_text())
    assert meta["data_type"] == "float32" and [c["name"] for c in meta["codecs"]] == ["sharding_indexed"]
    from distlg.nn.model import INR

    inr = INR(md.arch, range(md.grid.num_partitions), seed=0)  # what random_model wrote
    layout = local_layout(md.arch)
    assert np.array_equal(md.read_rows(np.arange(md.grid.num_partitions)),
                          layout.pack({k: v for k, v in inr.named_tensors() if k in layout.shapes}))
    export(source, tmp_path / "plain")  # no --quantize: the shards linked, unchanged
    key = md.shards.key(0)
    assert (tmp_path / "plain" / "local" / key).stat().st_ino == (source / "local" / key).stat().st_ino


@pytest.mark.faults
@pytest.mark.parametrize("argv, needle", [
    (["--quantize", "int4"], "invalid choice: 'int4'"),
    (["--quantize", "int8", "--scale", "per-row"], "invalid choice: 'per-row'"),
    (["--quantize", "fp16", "--scale", "per-tensor"], "--scale applies to --quantize int8 only"),
    (["--scale", "per-partition"], "--scale applies to --quantize int8 only"),
    (["--quantize", "int8", "--format", "safetensors"], "--quantize writes format 2"),
])
def test_bad_quantize_options_are_one_line_and_write_nothing(source, tmp_path, capsys, argv, needle):
    before = snapshot(source)
    out = tmp_path / "out"
    try:
        status = main(["export", str(source), str(out), "--no-progress", *argv])
    except SystemExit as exc:  # argparse's own refusal
        status = exc.code
    assert status == 2
    assert needle in one_line(capsys.readouterr().err)
    assert not out.exists() and not list(tmp_path.glob(".out*")) and snapshot(source) == before


def test_a_quantized_model_is_not_quantized_again(source, tmp_path, capsys):
    q = exported(source, tmp_path, "int8", None)
    assert main(["export", str(q.path), str(tmp_path / "again"), "--quantize", "fp16",
                 "--no-progress"]) == 2
    one_line(capsys.readouterr().err, "quantized already (int8 per-tensor)")
    assert not (tmp_path / "again").exists()
    assert main(["export", str(q.path), str(tmp_path / "copy"), "--no-progress"]) == 0
    assert ModelDir.open(tmp_path / "copy").quantization == q.quantization


def _scale_chunk(q, shard):
    return q.path / SCALES_ARRAY / q.shards.key(shard)


def _swap_scales(q):
    shutil.copyfile(_scale_chunk(q, 1), _scale_chunk(q, 0))


def _drop_scales(q):
    _scale_chunk(q, 0).unlink()


def _flip_shard(q):
    path = q.path / "local" / q.shards.key(0)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def _swap_shards(q):
    shutil.copyfile(q.path / "local" / q.shards.key(1), q.path / "local" / q.shards.key(0))


def _global_codes(q):
    z = zarr.open_array(str(q.path / "global"), mode="r+")
    values = z[...]
    values[0] ^= np.int8(1)
    z[...] = values


@pytest.mark.faults
@pytest.mark.parametrize("spoil, needle", [
    (_swap_scales, "do not match the model's checksum"),
    (_drop_scales, "do not match the model's checksum"),
    (_flip_shard, "does not decompress|fails its checksum"),
    (_swap_shards, "do not match the model's checksum"),
    (_global_codes, "global tensors do not match"),
])
def test_tampered_quantized_models_are_one_line(source, tmp_path, capsys, spoil, needle):
    q = exported(source, tmp_path, "int8", "per-partition")
    spoil(q)
    for argv in (["render", str(q.path), "--out", str(tmp_path / "r.npy"), "--no-progress"],
                 ["crop", str(q.path), str(tmp_path / "c"), "--keep", "0:2", "--no-progress"]):
        assert main(argv) == 2, argv
        assert re.search(needle, one_line(capsys.readouterr().err))
    assert not (tmp_path / "r.npy").exists() and not (tmp_path / "c").exists()


def test_info_says_the_quantization_and_the_bytes_on_disk(source, tmp_path, capsys):
    q = exported(source, tmp_path, "int8", "per-partition")
    assert main(["info", str(q.path)]) == 0
    out = capsys.readouterr().out
    assert "int8 codes x per-partition scales" in out
    size = q.storage()[1]
    assert re.search(rf"stored +{size:,} bytes .*the weights as float32", out)
    assert main(["info", str(source)]) == 0
    assert "quantized" not in capsys.readouterr().out
    import subprocess
    import sys

    probe = ("import contextlib, io, sys\nfrom distlg.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n"
             f"    assert main(['info', {str(q.path)!r}]) == 0\n"
             "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr  # still no torch


@pytest.mark.parametrize("quantize, scale", [("fp16", None), ("int8", "per-partition")])
def test_extend_a_quantized_model(tmp_path, quantize, scale):
    model = random_model(tmp_path / "m", (6, 8, 10), (2, 2, 1), "video", overlaps=(1, 0, 0))
    export(model, tmp_path / "q", quantize=quantize, scale=scale)
    q = ModelDir.open(tmp_path / "q")
    old = ((0, 6), (0, 8), (0, 10))
    before = render(q, old)
    clip = np.random.default_rng(0).integers(0, 256, (12, 8, 10, 3), dtype=np.uint8)
    result = extend(q, Signal.from_array(clip, "video"), tmp_path / "x",
                    ExtendConfig(steps=3, samples_per_partition=16))
    x = ModelDir.open(result.path)
    assert x.quantization == q.quantization and x.partition_ids == list(range(8))
    assert np.array_equal(render(x, old), before)
    assert np.array_equal(x.codes[:4], q.codes)
    assert np.isfinite(render(x)).all()


def test_a_siren_and_a_per_partition_model_quantize_too(tmp_path):
    from distlg.data.signal import SignalInfo
    from distlg.geometry import PartitionGrid
    from distlg.nn.model import INR, Architecture
    from distlg.training.checkpoint import write_model
    from distlg.training.distributed import World

    info = SignalInfo("image", (16, 16), 3, np.dtype("uint8"), (0.0, 255.0))
    for arch, factors in (("siren", (1, 1)), ("per-partition", (2, 2))):
        a = Architecture(arch, 2, 3, hidden_layers=2, local_width=8, global_width=12)
        grid = PartitionGrid((16, 16), factors, ())
        path = write_model(tmp_path / arch, INR(a, range(grid.num_partitions), seed=0), World(),
                           grid, info)
        export(path, tmp_path / f"{arch}-q", quantize="int8", scale="per-partition")
        q = ModelDir.open(tmp_path / f"{arch}-q")
        assert q.partition_ids == ModelDir.open(path).partition_ids
        assert np.abs(render(q) - render(path)).max() < 0.05


def test_a_quantized_model_over_http_renders_and_crops_as_the_local_one(source, tmp_path, capsys):
    from test_remote import serve

    q = exported(source, tmp_path, "int8", "per-partition")
    region = ((0, 4), (6, 20), (0, 32))
    with serve(tmp_path) as (_, base):
        url = f"{base}/{q.path.name}"
        assert np.array_equal(render(url, region), render(q.path, region))
        assert main(["info", url]) == 0
        assert "int8 codes x per-partition scales" in capsys.readouterr().out
        crop(url, select(ModelDir.open(url), keep=[region]), tmp_path / "c")
    assert np.array_equal(render(tmp_path / "c", region), render(q.path, region))


def test_the_command_line_offers_what_export_accepts():
    from distlg.commands import export as command
    from distlg.modeldir import quantize

    assert command.QUANTIZE == quantize.QUANTIZE and command.SCALES == quantize.SCALES
