"""Model directories: bad input refused with a clear message, export, info."""

import json
import pickle

import numpy as np
import pytest
from modelkit import random_model

from distlg.cli import main
from distlg.config import Config
from distlg.modeldir.crop import crop
from distlg.modeldir.export import export
from distlg.modeldir.format import ModelDir, ModelDirError
from distlg.rendering.region import RegionError, parse_box, parse_ids, parse_scale
from distlg.rendering.render import RegionRender, RenderError, render
from distlg.training.trainer import train


@pytest.fixture
def model(tmp_path):
    """A model directory of format version 1 (one file per partition): the format these
    file-level checks are about (format 2's are in test_shards.py)."""
    return random_model(tmp_path / "model", (24, 40), (2, 4), "image", fmt="safetensors")


def edit_manifest(path, change):
    manifest = json.loads((path / "manifest.json").read_text())
    change(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.faults
def test_missing_partition_file(model):
    (model / "part-000005.safetensors").unlink()
    render(model, ((0, 12), (0, 20)))  # partitions 0 and 1 only: still fine
    with pytest.raises(ModelDirError, match="part-000005.safetensors listed in the manifest is missing"):
        render(model)
    with pytest.raises(ModelDirError, match="missing"):
        crop(model, [5], model.parent / "out")


@pytest.mark.faults
@pytest.mark.parametrize("name", ["part-000003.safetensors", "global.safetensors"])
def test_tampered_file_is_refused(model, name):
    data = bytearray((model / name).read_bytes())
    data[-1] ^= 1  # one bit of one weight
    (model / name).write_bytes(bytes(data))
    with pytest.raises(ModelDirError, match=f"{name}: sha256 differs from the manifest"):
        render(model)


@pytest.mark.faults
@pytest.mark.parametrize("name", ["../evil.safetensors", "/etc/passwd", "sub/part.safetensors",
                                  "..", ".hidden", "a\\b.safetensors", "", 7])
@pytest.mark.parametrize("where", ["partition", "global"])
def test_path_traversal_in_manifest_is_refused(model, name, where):
    def change(m):
        (m["partitions"][0] if where == "partition" else m["global"])["file"] = name

    edit_manifest(model, change)
    with pytest.raises(ModelDirError, match="unsafe file name in manifest"):
        ModelDir.open(model)


@pytest.mark.faults
def test_a_link_out_of_the_model_directory_is_refused(model, tmp_path):
    outside = tmp_path / "elsewhere.safetensors"
    (model / "part-000002.safetensors").rename(outside)
    (model / "part-000002.safetensors").symlink_to(outside)
    with pytest.raises(ModelDirError, match="link leading outside the model directory"):
        render(model)


@pytest.mark.faults
def test_unknown_format_version_and_foreign_manifests(model):
    edit_manifest(model, lambda m: m.update(version=3))
    with pytest.raises(ModelDirError, match="format version 3; this distlg reads versions 1, 2"):
        ModelDir.open(model)
    edit_manifest(model, lambda m: m.update(version=2))
    with pytest.raises(ModelDirError, match="format version 2; a manifest.json model is version 1"):
        ModelDir.open(model)
    edit_manifest(model, lambda m: m.update(version=1, format="something-else"))
    with pytest.raises(ModelDirError, match="not a distlg model description"):
        ModelDir.open(model)
    (model / "manifest.json").write_text("{not json")
    with pytest.raises(ModelDirError, match="not valid JSON"):
        ModelDir.open(model)
    (model / "manifest.json").unlink()
    with pytest.raises(ModelDirError, match="no zarr.json or manifest.json"):
        ModelDir.open(model)


def test_partition_ids_must_lie_in_the_grid_once(model):
    edit_manifest(model, lambda m: m["partitions"][0].update(id=8))
    with pytest.raises(ModelDirError, match="partitions 8 outside the grid of 8"):
        ModelDir.open(model)
    edit_manifest(model, lambda m: m["partitions"][0].update(id=1))
    with pytest.raises(ModelDirError, match="more than once"):
        ModelDir.open(model)


class _Payload:
    """Unpickling this would create a file: proof that something unpickled it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.faults
def test_a_pickle_is_never_loaded_even_with_a_matching_sha256(model, tmp_path):
    import hashlib

    marker = tmp_path / "unpickled"
    data = pickle.dumps({"local.0.weight": _Payload(str(marker))})
    (model / "part-000000.safetensors").write_bytes(data)
    edit_manifest(model, lambda m: m["partitions"][0].update(sha256=hashlib.sha256(data).hexdigest()))
    with pytest.raises(ModelDirError, match="not a valid safetensors file"):
        render(model)
    assert not marker.exists()


def test_region_out_of_bounds_or_empty(model, tmp_path, capsys):
    shape, axes = (24, 40), ("y", "x")
    with pytest.raises(RegionError, match="axis y: 0:25 lies outside the signal"):
        parse_box("0:25", shape, axes)
    with pytest.raises(RegionError, match="axis x: -3:4 lies outside"):
        parse_box(":,-3:4", shape, axes)
    for empty in ("5:5", "7:2"):
        with pytest.raises(RegionError, match="is empty"):
            parse_box(empty, shape, axes)
    with pytest.raises(RenderError, match="axis x: 0:41 lies outside"):
        RegionRender(model, ((0, 24), (0, 41)))
    with pytest.raises(RenderError, match="axis y: 9:9 is empty"):
        RegionRender(model, ((9, 9), (0, 40)))
    with pytest.raises(RenderError, match="scale"):
        RegionRender(model, None, 0.0)
    status = main(["render", str(model), "--region", "0:99", "--out", str(tmp_path / "x.npy")])
    assert status == 2
    assert "lies outside the signal (0:24)" in capsys.readouterr().err
    assert not (tmp_path / "x.npy").exists()


def test_box_ids_and_scale_syntax():
    shape, axes = (30, 40, 50), ("t", "y", "x")
    assert parse_box(None, shape, axes) == ((0, 30), (0, 40), (0, 50))
    assert parse_box("3:9", shape, axes) == ((3, 9), (0, 40), (0, 50))
    assert parse_box(":9,10:,:", shape, axes) == ((0, 9), (10, 40), (0, 50))
    assert parse_box("x=5:6,t=1:2", shape, axes) == ((1, 2), (0, 40), (5, 6))
    assert parse_box("2=5:6", shape, axes) == ((0, 30), (0, 40), (5, 6))
    for bad in ("1:2,3:4,5:6,7:8", "t=1:2,3:4", "q=1:2", "1-2", "a:b"):
        with pytest.raises(RegionError):
            parse_box(bad, shape, axes)
    assert parse_ids("3,5,10-12,5") == [3, 5, 10, 11, 12]
    assert parse_scale("2", 3) == (2.0, 2.0, 2.0) and parse_scale("1,2,0.5", 3) == (1, 2, 0.5)
    for bad in ("0", "1,2", "-1", "x"):
        with pytest.raises(RegionError):
            parse_scale(bad, 3)


def test_export_writes_the_weights_alone(tmp_path):
    config = Config().replace(path="builtin:astronaut@32x32", factors=[2, 2], params=800, steps=20,
                              out=str(tmp_path / "run"), tensorboard=False, progress=False)
    train(config)
    run = tmp_path / "run"
    exported = export(run, tmp_path / "exported")  # the run's latest checkpoint
    assert not exported.is_checkpoint and exported.partition_ids == [0, 1, 2, 3]
    assert not (tmp_path / "exported" / "optim").exists()  # Adam's moments are left out
    assert np.array_equal(render(exported), render(run / "model"))
    files = export(run, tmp_path / "files", fmt="safetensors")  # one file per partition
    assert files.version == 1 and len(list((tmp_path / "files").glob("part-*.safetensors"))) == 4
    for entry in [files.manifest.raw["global"], *files.entries.values()]:
        assert not any(k.startswith("optim.") for k in files.read_entry(entry))
    assert np.array_equal(render(files), render(run / "model"))
    checkpoint = ModelDir.open(next((run / "checkpoints").iterdir()))
    assert checkpoint.params() == exported.params()
    with pytest.raises(ModelDirError, match="is a checkpoint; export it"):
        crop(checkpoint, [0], tmp_path / "cropped")
    with pytest.raises(ModelDirError, match="already exists and is not empty"):
        export(run, tmp_path / "exported")
    with pytest.raises(ModelDirError, match="neither a checkpoint nor a run directory"):
        export(tmp_path, tmp_path / "other")


def test_info_describes_geometry_partitions_weights_and_region(model, capsys):
    crop(model, [0, 1, 4, 5])  # the left half, in place
    assert main(["info", str(model)]) == 0
    out = capsys.readouterr().out
    per = ModelDir.open(model).arch.local_params()
    assert "image y=24 x x=40, 3 channel(s), uint8" in out
    assert "2 x 4 = 8 partitions of 12 x 10; halo 0 x 0; padding 0 x 0" in out
    assert "4 of 8 present; missing 2-3, 6-7" in out
    assert f"local {4 * per:,})" in out
    assert "region      0:24,0:20 (complete)" in out


def test_every_option_of_the_model_commands_has_help():
    from distlg.cli import build_parser

    choices = build_parser()._subparsers._group_actions[0].choices
    for name in ("export", "crop", "render", "extend", "info"):
        for action in choices[name]._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help"
