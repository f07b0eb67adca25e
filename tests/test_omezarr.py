"""OME-Zarr renders: what ome-zarr-py and the OME models read, levels rendered from the model,
both format versions, bounded memory, and bad input."""

import tracemalloc

import numpy as np
import pytest
import zarr
from faults.helpers import one_line
from modelkit import random_model

import distlg.rendering.omezarr as omezarr
import distlg.rendering.render as render_module
from distlg.cli import main
from distlg.rendering.render import render

ome_zarr = pytest.importorskip("ome_zarr")
from ome_zarr.io import parse_url  # noqa: E402
from ome_zarr.reader import Reader  # noqa: E402


def read_ome(path):
    """(axes, levels as numpy arrays, each level's transformations) as ome-zarr-py reads them."""
    node = list(Reader(parse_url(str(path)))())[0]
    return node.metadata["axes"], [np.asarray(d) for d in node.data], \
        node.metadata["coordinateTransformations"]


def validate(path, version):
    """The OME-NGFF models (pydantic) accept the group as an image of ``version``."""
    if version == "0.5":
        from ome_zarr_models.v05.image import Image
        return Image.from_zarr(zarr.open_group(str(path), mode="r", zarr_format=3))
    from ome_zarr_models.v04.image import Image
    return Image.from_zarr(zarr.open_group(str(path), mode="r", zarr_format=2))


@pytest.fixture
def volume(tmp_path):
    """A float32 volume model (values in their own units, so levels compare to 1e-6) with a
    voxel size."""
    return random_model(tmp_path / "vol", (20, 24, 28), (2, 3, 2), "volume", channels=1,
                        dtype="float32", value_range=(-3.0, 5.0),
                        meta={"voxel_size": [2.0, 0.5, 0.25], "voxel_unit": "micrometer"})


@pytest.mark.parametrize("version", ["0.5", "0.4"])
def test_every_level_is_a_direct_render_at_its_scale(volume, tmp_path, version, capsys):
    out = tmp_path / "v.ome.zarr"
    region = "2:18,0:24,3:27"
    assert main(["render", str(volume), "--region", region, "--out", str(out), "--levels", "3",
                 "--ome-version", version, "--no-progress"]) == 0
    validate(out, version)
    axes, levels, transforms = read_ome(out)
    assert [(a["name"], a["type"], a.get("unit")) for a in axes] == [
        ("c", "channel", None), ("z", "space", "micrometer"), ("y", "space", "micrometer"),
        ("x", "space", "micrometer")]
    box = ((2, 18), (0, 24), (3, 27))
    for k, level in enumerate(levels):
        direct = render(volume, box, scale=2.0 ** -k, raw=True)  # [z, y, x, c]
        assert level.dtype == np.float32
        np.testing.assert_allclose(np.moveaxis(level, 0, -1), direct, rtol=0, atol=1e-6)
        scale, shift = transforms[k][0]["scale"], transforms[k][1]["translation"]
        pitch = [(b - a) / n for (a, b), n in zip(box, direct.shape[:3])]
        assert scale == pytest.approx([1.0] + [p * v for p, v in zip(pitch, (2.0, 0.5, 0.25))])
        assert shift == pytest.approx([0.0] + [(a - 0.5 + p / 2) * v for (a, _), p, v in
                                               zip(box, pitch, (2.0, 0.5, 0.25))])
    assert [lv.shape for lv in levels] == [(1, 16, 24, 24), (1, 8, 12, 12), (1, 4, 6, 6)]
    if version == "0.4":
        assert (out / ".zattrs").is_file() and not (out / "zarr.json").exists()
    else:
        assert zarr.open_array(str(out / "0"), mode="r").metadata.dimension_names == ("c", "z", "y", "x")


def test_video_axes_time_first_in_seconds_and_image_channels(tmp_path):
    video = random_model(tmp_path / "video", (6, 16, 20), (2, 2, 2), "video", meta={"fps": 25.0})
    out = tmp_path / "clip.ome.zarr"
    assert main(["render", str(video), "--out", str(out), "--levels", "2", "--no-progress"]) == 0
    validate(out, "0.5")
    axes, levels, transforms = read_ome(out)
    assert [(a["name"], a["type"], a.get("unit")) for a in axes] == [
        ("t", "time", "second"), ("c", "channel", None), ("y", "space", None), ("x", "space", None)]
    assert [lv.shape for lv in levels] == [(6, 3, 16, 20), (6, 3, 8, 10)]  # time keeps its frames
    assert transforms[1][0]["scale"] == pytest.approx([1 / 25, 1.0, 2.0, 2.0])
    direct = render(video, None, scale=(1, 0.5, 0.5), raw=True)
    assert np.array_equal(np.moveaxis(levels[1], 1, -1), direct)
    image = random_model(tmp_path / "image", (40, 30), (2, 2), "image")
    out = tmp_path / "img.ome.zarr"
    assert main(["render", str(image), "--out", str(out), "--no-progress"]) == 0  # auto: 1 level
    axes, levels, _ = read_ome(out)
    assert [a["name"] for a in axes] == ["c", "y", "x"] and len(levels) == 1
    assert np.array_equal(np.moveaxis(levels[0], 0, -1), render(image, raw=True))
    omero = zarr.open_group(str(out), mode="r").attrs["ome"]["omero"]
    assert [c["color"] for c in omero["channels"]] == ["FF0000", "00FF00", "0000FF"]


def test_auto_levels_stop_at_the_smallest_size():
    from distlg.data.signal import SignalInfo

    info = SignalInfo("video", (5, 1000, 300), 3, np.dtype("uint8"), (0, 255))
    assert omezarr.auto_levels((5, 1000, 300), info) == 3  # 1000 -> 500 -> 250
    assert omezarr.auto_levels((5, 200, 100), info) == 1
    assert omezarr.level_scales((1.0, 2.0, 2.0), info, 3)[2] == (1.0, 0.5, 0.5)


def test_large_levels_are_sharded_and_read_alike(volume, tmp_path, monkeypatch):
    monkeypatch.setattr(omezarr, "SHARD_ABOVE", 1)
    monkeypatch.setattr(omezarr, "CHUNK_SIDE", {3: 8})
    monkeypatch.setattr(omezarr, "SHARD_BYTES", 4 * 12 * 28 * 4)
    monkeypatch.setattr(omezarr, "ROW_BYTES", 24 * 28 * 4 * 4)  # chunk-rows of 4 slices
    out = tmp_path / "s.ome.zarr"
    assert main(["render", str(volume), "--out", str(out), "--levels", "2", "--no-progress"]) == 0
    array = zarr.open_array(str(out / "0"), mode="r")
    assert array.shards is not None and array.shards != array.chunks
    assert array.chunks == (1, 4, 8, 8) and array.shards[:2] == (1, 4)  # a chunk-row deep
    _, levels, _ = read_ome(out)
    np.testing.assert_allclose(np.moveaxis(levels[0], 0, -1), render(volume, raw=True), atol=1e-6)


def test_a_render_larger_than_its_memory_bound_stays_within_it(tmp_path, monkeypatch):
    """The render benchmark's check, in small: with slabs of 2^14 values and chunk-rows of
    64 KiB, the numpy memory a 3-level render holds at once stays under a bound 8x smaller than
    the values it renders. A small render first imports what the command imports lazily, so
    the bound counts the render's buffers, not module objects (which depend on test order)."""
    model = random_model(tmp_path / "image", (64, 64), (2, 2), "image", dtype="float32",
                         value_range=(0.0, 1.0))
    monkeypatch.setattr(render_module, "SLAB_VALUES", 1 << 14)
    monkeypatch.setattr(omezarr, "ROW_BYTES", 64 << 10)
    assert main(["render", str(model), "--out", str(tmp_path / "warm.ome.zarr"), "--scale", "4",
                 "--levels", "3", "--no-progress"]) == 0
    out = tmp_path / "big.ome.zarr"
    tracemalloc.start()
    try:
        assert main(["render", str(model), "--out", str(out), "--scale", "16", "--levels", "3",
                     "--no-progress"]) == 0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    rendered = sum((1024 >> k) ** 2 * 3 * 4 for k in range(3))  # float32 values of 3 levels
    bound = 3 << 19  # 1.5 MiB
    assert peak < bound < rendered / 8, (peak, rendered)
    _, levels, _ = read_ome(out)
    assert [lv.shape for lv in levels] == [(3, 1024, 1024), (3, 512, 512), (3, 256, 256)]


@pytest.mark.faults
def test_bad_input_is_one_line_and_nothing_is_written(tmp_path, capsys):
    audio = random_model(tmp_path / "audio", (64,), (2,), "audio", channels=1, dtype="int16",
                         value_range=(-100.0, 100.0))
    image = random_model(tmp_path / "image", (16, 16), (2, 2), "image")
    cases = [
        (["render", str(audio), "--out", str(tmp_path / "a.ome.zarr")], "audio"),
        (["render", str(image), "--out", str(tmp_path / "b.png"), "--levels", "2"], "--levels"),
        (["render", str(image), "--out", str(tmp_path / "c.ome.zarr"), "--levels", "17"], "--levels"),
    ]
    for argv, word in cases:
        assert main(argv + ["--no-progress"]) == 2
        one_line(capsys.readouterr().err, word)
    with pytest.raises(SystemExit) as stop:
        main(["render", str(image), "--out", str(tmp_path / "d.ome.zarr"), "--ome-version", "0.3"])
    assert stop.value.code == 2
    capsys.readouterr()
    taken = tmp_path / "e.ome.zarr"
    taken.mkdir()
    assert main(["render", str(image), "--out", str(taken), "--no-progress"]) == 2
    one_line(capsys.readouterr().err, "already exists")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio", "e.ome.zarr", "image"]


@pytest.mark.faults
def test_a_render_that_fails_half_way_leaves_nothing(volume, tmp_path, monkeypatch, capsys):
    calls = {"n": 0}
    real = omezarr.OmeZarrWriter._flush

    def failing(self, start):
        calls["n"] += 1
        if self.level == 1:
            raise OSError(28, "No space left on device")
        real(self, start)

    monkeypatch.setattr(omezarr.OmeZarrWriter, "_flush", failing)
    out = tmp_path / "half.ome.zarr"
    assert main(["render", str(volume), "--out", str(out), "--levels", "2", "--no-progress"]) == 2
    line = one_line(capsys.readouterr().err, "No space left", "nothing was written")
    assert str(out) in line and calls["n"] >= 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol"]


def test_ingest_records_the_voxel_size_and_the_model_carries_it(tmp_path, capsys):
    from distlg.data.store import open_signal

    np.save(tmp_path / "vol.npy", np.zeros((8, 8, 8), np.uint8))
    assert main(["ingest", str(tmp_path / "vol.npy"), str(tmp_path / "bad.zarr"),
                 "--voxel-size", "1", "2"]) == 2
    one_line(capsys.readouterr().err, "--voxel-size needs 3 sizes")
    assert not (tmp_path / "bad.zarr").exists()
    assert main(["ingest", str(tmp_path / "vol.npy"), str(tmp_path / "vol.zarr"), "--voxel-size",
                 "2", "0.5", "0.5", "--voxel-unit", "nanometer", "--no-progress"]) == 0
    stored = open_signal(tmp_path / "vol.zarr").info
    assert stored.voxel_size == (2.0, 0.5, 0.5) and stored.voxel_unit == "nanometer"
    from distlg.data.signal import SignalInfo

    info = SignalInfo("volume", (8, 8, 8), 1, np.dtype("uint8"), (0, 255),
                      voxel_size=stored.voxel_size, voxel_unit=stored.voxel_unit)
    assert SignalInfo.from_dict(info.to_dict()).voxel_size == (2.0, 0.5, 0.5)
    assert info.to_dict()["meta"]["voxel_size"] == [2.0, 0.5, 0.5]  # on disk as before
