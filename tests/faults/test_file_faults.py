"""Damaged files and odd paths: a truncated TIFF stack or mp4 is one line and leaves no store
(the mp4 used to ingest 28 of 60 frames without a word, the TIFF a store that never completes);
``ingest --overwrite`` through a link to the store replaces the store where it lies; a pack's
chunks carry checksums; a weight file with a renamed or reshaped tensor (and the right sha256)
is one line; ``info`` of a run folder describes its model, of a killed render says so."""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
from helpers import one_line
from modelkit import random_model
from safetensors.torch import load_file, save_file

from distlg.cli import main


def test_a_truncated_tiff_stack_is_one_line_and_leaves_no_store(tmp_path, capsys):
    import tifffile

    tifffile.imwrite(tmp_path / "v.tif", np.random.default_rng(0).integers(0, 255, (20, 32, 32),
                                                                            dtype=np.uint8))
    data = (tmp_path / "v.tif").read_bytes()
    (tmp_path / "v.tif").write_bytes(data[:len(data) * 6 // 10])
    assert main(["ingest", str(tmp_path / "v.tif"), str(tmp_path / "v.zarr"), "--no-progress"]) == 2
    one_line(capsys.readouterr().err, "v.tif", "truncated or damaged")
    assert not (tmp_path / "v.zarr").exists()


def _clip(path, frames=30):
    import av

    out = av.open(str(path), "w", options={"movflags": "faststart"})  # frame count up front
    stream = out.add_stream("libx264", rate=25)
    stream.width = stream.height = 64
    stream.pix_fmt = "yuv420p"
    noise = np.random.default_rng(0).integers(0, 255, (frames, 64, 64, 3), dtype=np.uint8)
    for frame in noise:
        out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
    out.mux(stream.encode())
    out.close()


def test_a_truncated_mp4_is_one_line_and_leaves_no_store(tmp_path, capsys):
    _clip(tmp_path / "c.mp4")
    data = (tmp_path / "c.mp4").read_bytes()
    (tmp_path / "t.mp4").write_bytes(data[:len(data) // 2])
    assert main(["ingest", str(tmp_path / "c.mp4"), str(tmp_path / "c.zarr"), "--no-progress"]) == 0
    assert main(["ingest", str(tmp_path / "t.mp4"), str(tmp_path / "t.zarr"), "--no-progress"]) == 2
    one_line(capsys.readouterr().err, "t.mp4", "of the 30 frames the container lists",
             "truncated or damaged")
    assert not (tmp_path / "t.zarr").exists()


def test_overwrite_through_a_link_replaces_the_store_where_it_lies(tmp_path, capsys):
    assert main(["ingest", "builtin:camera@32x32", str(tmp_path / "real.zarr"), "--no-progress"]) == 0
    os.symlink("real.zarr", tmp_path / "link.zarr")
    assert main(["ingest", "builtin:astronaut@32x32", str(tmp_path / "link.zarr"), "--overwrite",
                 "--no-progress"]) == 0
    assert (tmp_path / "link.zarr").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.zarr", "real.zarr"]
    meta = json.loads((tmp_path / "real.zarr" / "zarr.json").read_text())
    assert meta["attributes"]["distlg"]["meta"]["source"] == "builtin:astronaut@32x32"


def test_a_pack_carries_checksums_and_a_damaged_chunk_is_named(tmp_path, capsys):
    import tarfile

    assert main(["ingest", "builtin:camera@64x64", str(tmp_path / "s.zarr"), "--chunks", "16", "16",
                 "--no-progress"]) == 0
    assert main(["pack", str(tmp_path / "s.zarr"), str(tmp_path / "p"), "--factors", "2", "2",
                 "--no-progress"]) == 0
    manifest = json.loads((tmp_path / "p" / "pack.json").read_text())
    for entry in manifest["shards"][0]["files"]:
        digest = hashlib.sha256((tmp_path / "p" / entry["name"]).read_bytes()).hexdigest()
        assert entry["sha256"] == digest
    shard = tmp_path / "p" / manifest["shards"][0]["files"][0]["name"]
    with tarfile.open(shard) as tar:  # flip one value byte of the third chunk
        member = [m for m in tar.getmembers() if m.name.endswith(".npy")][2]
    data = bytearray(shard.read_bytes())
    data[member.offset_data + member.size - 1] ^= 0xFF
    shard.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["train", "--signal", str(tmp_path / "s.zarr"), "--pack", str(tmp_path / "p"),
                 "--factors", "2", "2", "--params", "400", "--steps", "2", "--sample-fraction",
                 "0.5", "--out", str(tmp_path / "run"), "--no-progress", "--no-tensorboard"]) == 2
    one_line(capsys.readouterr().err, "crc32", "write the pack again")


@pytest.mark.parametrize("change", ["rename", "transpose"])
def test_a_weight_file_with_an_altered_tensor_is_one_line(tmp_path, capsys, change):
    """The global file of a format-1 model (one safetensors file per partition) with a tensor
    renamed or transposed, its sha256 updated: a KeyError or ValueError traceback before."""
    model = random_model(tmp_path / "m", (16, 16), (2, 2), "image", fmt="safetensors")
    manifest = json.loads((model / "manifest.json").read_text())
    entry = manifest["global"]
    tensors = load_file(model / entry["file"])
    name = next(n for n, t in tensors.items() if t.ndim == 2 and t.shape[0] != t.shape[1])
    if change == "rename":
        tensors["renamed"] = tensors.pop(name)
    else:
        tensors[name] = tensors[name].T.contiguous()
    save_file(tensors, model / entry["file"])
    entry["sha256"] = hashlib.sha256((model / entry["file"]).read_bytes()).hexdigest()
    (model / "manifest.json").write_text(json.dumps(manifest))
    assert main(["render", str(model), "--out", str(tmp_path / "r.npy"), "--no-progress"]) == 2
    one_line(capsys.readouterr().err, repr(name), "foreign or altered")
    assert not (tmp_path / "r.npy").exists()


def test_info_of_a_run_folder_describes_its_model(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--signal", "builtin:camera@32x32", "--factors", "2", "2", "--params",
                 "400", "--steps", "2", "--out", str(out), "--no-progress", "--no-tensorboard"]) == 0
    capsys.readouterr()
    assert main(["info", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"model       {out / 'model'} ")
    shutil.rmtree(out / "model")  # killed before its model was written
    assert main(["info", str(out)]) == 0
    assert "checkpoint of step 2" in capsys.readouterr().out


def test_info_of_a_killed_render_says_so(tmp_path, capsys):
    from distlg.rendering.render import RegionRender
    from distlg.rendering.writers import open_writer

    model = random_model(tmp_path / "m", (16, 16), (2, 2), "image")
    plan = RegionRender(model)
    output = open_writer(tmp_path / "r.zarr", plan)
    output.write(next(iter(plan)))  # killed here: never closed
    assert main(["info", str(output.staging / "r.zarr")]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert "render that did not finish" in line and "ingest" not in line


def test_an_interrupted_ingest_is_one_line_and_resumes(tmp_path):
    """zarr's writes were left pending on its event loop and died at exit in hundreds of
    lines of asyncio's noise."""
    from test_interrupt_faults import _terminated

    from distlg.data.store import open_signal

    clip = np.random.default_rng(0).integers(0, 255, (60, 64, 64, 3), dtype=np.uint8)
    np.save(tmp_path / "clip.npy", clip)
    args = ["ingest", str(tmp_path / "clip.npy"), str(tmp_path / "s.zarr"), "--kind", "video",
            "--chunks", "1", "8", "8", "--no-progress"]
    done = _terminated(args, str(tmp_path / "s.zarr" / "c" / "3"))
    assert done.returncode == 130, done.stderr
    one_line(done.stderr, "interrupted")
    assert main(args) == 0
    assert np.array_equal(open_signal(tmp_path / "s.zarr").data[:], clip)
