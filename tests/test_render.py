"""Rendering regions: the files it opens, the grid it samples, bounded slabs, every writer."""

import sys
import wave
from pathlib import Path

import numpy as np
import pytest
from modelkit import random_model

import distlg.rendering.region as region_module
import distlg.rendering.render as render_module
from distlg.cli import main
from distlg.config import Config
from distlg.data.sources.builtin import builtin
from distlg.data.store import open_signal
from distlg.modeldir.crop import crop
from distlg.modeldir.format import ModelDir
from distlg.rendering.region import RenderGrid
from distlg.rendering.render import RegionRender, RenderError, render, render_partitions
from distlg.training.evaluation import evaluate
from distlg.training.trainer import train

_OPENED: list[str] | None = None


def _audit(event, args):
    if event == "open" and _OPENED is not None and isinstance(args[0], (str, Path)):
        _OPENED.append(str(args[0]))


sys.addaudithook(_audit)  # audit hooks cannot be removed; this one records only inside opened()


def opened(fn):
    """The paths of every file ``fn()`` opens (Python's audit events, so nothing escapes)."""
    global _OPENED
    _OPENED = []
    try:
        fn()
        return _OPENED
    finally:
        _OPENED = None


@pytest.fixture
def video(tmp_path):
    return random_model(tmp_path / "video", (20, 30, 40), (4, 3, 4), "video", overlaps=(1, 2, 2))


def test_a_render_opens_only_the_shards_it_needs(video):
    region = ((6, 9), (0, 12), (25, 40))  # frames of layer 1; rows of 0-1; columns of 2-3
    md = ModelDir.open(video)
    grid = md.grid
    expected = [grid.pid((1, y, x)) for y in (0, 1) for x in (2, 3)]
    files = opened(lambda: render(video, region))
    shards = sorted(str(Path(f).relative_to(video / "local")) for f in files if "/local/c/" in f)
    assert shards == sorted({md.shards.key(int(s)) for s in md.shards.locate(expected)[0]})
    assert RegionRender(video, region).reads == expected  # and only their byte ranges
    whole = opened(lambda: render(video))
    assert len({f for f in whole if "/local/c/" in f}) == int(np.prod(md.shards.shards))


def test_scale_one_is_the_trainers_evaluation_bit_for_bit(video):
    md = ModelDir.open(video)
    model = md.load()
    expected = np.empty((20, 30, 40, 3), np.float32)
    for _, box, values in render_partitions(model, md.grid):
        expected[tuple(slice(a, b) for a, b in box)] = values
    assert np.array_equal(render(video), expected)


def test_scale_samples_a_finer_or_coarser_grid_of_the_same_function(video):
    region = ((3, 11), (4, 20), (10, 30))
    base = render(video, region)
    fine = render(video, region, scale=3)
    assert fine.shape == (24, 48, 60, 3)
    # sample 3k+1 of a 3x grid sits on position k of the signal's own grid
    np.testing.assert_allclose(fine[1::3, 1::3, 1::3], base, atol=2e-5)
    assert render(video, region, scale=(1, 0.5, 0.25)).shape == (8, 8, 5, 3)
    s = RenderGrid(((0, 10),), (2.0,))
    assert np.allclose(s.positions(0), np.arange(20) / 2 - 0.25)
    assert RenderGrid(((0, 10),), (0.5,)).positions(0).tolist() == [0.5, 2.5, 4.5, 6.5, 8.5]


def test_continuous_positions_belong_to_the_nearest_samples_partition(video):
    grid = ModelDir.open(video).grid  # partitions of 5 frames
    s = RenderGrid(((0, 20), (0, 30), (0, 40)), (4.0, 1.0, 1.0))
    owners = s.owners(grid, 0)
    positions = s.positions(0)
    assert np.array_equal(owners, np.clip(np.floor((positions + 0.5) / 5), 0, 3))
    assert owners[positions < 4.5].max() == 0 and owners[positions > 4.5].min() == 1
    assert s.partitions(grid) == list(range(48))


def test_runs_computed_a_block_at_a_time_are_the_same(video, monkeypatch):
    grid = ModelDir.open(video).grid
    s = RenderGrid(((0, 20), (3, 30), (0, 40)), (2.7, 1.3, 0.9))
    whole = [s.runs(grid, axis) for axis in range(3)]
    monkeypatch.setattr(region_module, "RUN_BLOCK", 5)
    assert [s.runs(grid, axis) for axis in range(3)] == whole
    for axis, runs in enumerate(whole):
        assert [r[1] for r in runs[1:]] == [r[2] for r in runs[:-1]]  # contiguous
        assert runs[0][1] == 0 and runs[-1][2] == s.shape[axis]
        assert [r[0] for r in runs] == sorted({r[0] for r in runs})  # one run per partition


def test_cropped_partitions_fail_by_name_or_take_the_fill_value(video, tmp_path):
    md = ModelDir.open(video)
    crop(md, [p for p in md.partition_ids if md.grid.index(p)[0] != 2])  # frames 10-14 gone
    with pytest.raises(RenderError, match=r"region 8:12,0:30,0:40 needs partitions 24-35, which "
                                          r"this model does not hold"):
        RegionRender(video, ((8, 12), (0, 30), (0, 40)))
    raw = render(video, ((8, 12), (0, 30), (0, 40)), fill=17, raw=True)
    assert (raw[2:] == 17).all() and raw.dtype == np.uint8
    assert np.array_equal(raw[:2], render(video, ((8, 10), (0, 30), (0, 40)), raw=True))
    # a region of present partitions alone needs no fill
    render(video, ((0, 10), (0, 30), (0, 40)))


def test_memory_is_bounded_by_a_slab_and_a_layer_of_partitions(video, monkeypatch):
    monkeypatch.setattr(render_module, "SLAB_VALUES", 1000)
    monkeypatch.setattr(render_module, "EVAL_SAMPLES", 64)
    held = []
    load = ModelDir.load

    def counting_load(self, pids=None, *args, **kwargs):
        held.append(len(pids))
        return load(self, pids, *args, **kwargs)

    monkeypatch.setattr(ModelDir, "load", counting_load)
    plan = RegionRender(video, None, scale=(1, 1.5, 1))
    out = np.empty(plan.shape, np.float32)
    for slab in plan:
        assert slab.values.size <= max(1000, slab.values[0].size)  # one frame at least
        out[slab.start:slab.start + len(slab.values)] = slab.values
    assert held == [12, 12, 12, 12]  # one layer of 3 x 4 partitions at a time
    monkeypatch.undo()
    assert np.array_equal(out, render(video, scale=(1, 1.5, 1)))


def written(path):
    import zarr

    return zarr.open_array(str(path), mode="r")[...] if path.suffix == ".zarr" else np.load(path)


@pytest.mark.parametrize("suffix", [".npy", ".zarr"])
def test_array_outputs_hold_the_render_in_signal_units(video, tmp_path, suffix):
    out = tmp_path / f"region{suffix}"
    assert main(["render", str(video), "--region", "t=3:17,x=5:37", "--out", str(out),
                 "--scale", "1,0.5,1", "--no-progress"]) == 0
    expected = render(video, ((3, 17), (0, 30), (5, 37)), scale=(1, 0.5, 1), raw=True)
    assert written(out).dtype == np.uint8 and np.array_equal(written(out), expected)
    if suffix == ".zarr":
        stored = open_signal(str(out))  # a signal store like an ingested one
        assert stored.kind == "video" and stored.shape == (14, 15, 32)
    assert main(["render", str(video), "--out", str(out), "--no-progress"]) == 2  # never overwrites


def test_video_to_mp4_and_png_frames(video, tmp_path):
    region = ((2, 6), (0, 30), (0, 40))
    expected = render(video, region, raw=True)
    assert main(["render", str(video), "--region", "2:6", "--out", str(tmp_path / "c.mp4"),
                 "--no-progress"]) == 0
    import imageio.v3 as iio

    frames = iio.imread(tmp_path / "c.mp4", plugin="pyav")
    assert frames.shape == (4, 30, 40, 3)
    assert np.abs(frames.astype(float) - expected).mean() < 12  # lossy H.264 of noise-like frames
    assert main(["render", str(video), "--region", "2:6", "--out", str(tmp_path / "f.png"),
                 "--no-progress"]) == 0
    for k in range(4):
        assert np.array_equal(iio.imread(tmp_path / f"f-{k:06d}.png"), expected[k])


def test_image_to_png(tmp_path):
    model = random_model(tmp_path / "image", (30, 41), (3, 4), "image")
    assert main(["render", str(model), "--out", str(tmp_path / "i.png"), "--no-progress"]) == 0
    import imageio.v3 as iio

    assert np.array_equal(iio.imread(tmp_path / "i.png"), render(model, raw=True))


def test_audio_to_wav(tmp_path):
    model = random_model(tmp_path / "audio", (1000,), (8,), "audio", channels=1, dtype="int16",
                         value_range=(-20000, 20000))
    assert main(["render", str(model), "--out", str(tmp_path / "a.wav"), "--rate", "8000",
                 "--scale", "2", "--no-progress"]) == 0
    with wave.open(str(tmp_path / "a.wav")) as fh:
        assert fh.getframerate() == 16000 and fh.getnchannels() == 1 and fh.getsampwidth() == 2
        pcm = np.frombuffer(fh.readframes(fh.getnframes()), "<i2")
    assert np.array_equal(pcm, render(model, scale=2, raw=True)[:, 0])


def test_8bit_audio_to_8bit_wav(tmp_path):
    model = random_model(tmp_path / "audio", (1000,), (8,), "audio", channels=1, dtype="uint8",
                         value_range=(28, 228))
    assert main(["render", str(model), "--out", str(tmp_path / "a.wav"), "--no-progress"]) == 0
    with wave.open(str(tmp_path / "a.wav")) as fh:
        assert fh.getsampwidth() == 1  # unsigned, silence at 128, as the source was
        pcm = np.frombuffer(fh.readframes(fh.getnframes()), np.uint8)
    raw = render(model, raw=True)[:, 0]
    assert raw.dtype == np.uint8 and np.array_equal(pcm, raw)


@pytest.mark.parametrize("suffix", [".ply", ".obj"])
def test_volume_mesh_equals_marching_cubes_of_the_whole_render(tmp_path, suffix, monkeypatch):
    from scipy.spatial import KDTree
    from skimage.measure import marching_cubes

    model = random_model(tmp_path / "vol", (12, 10, 14), (2, 2, 2), "volume", channels=1)
    region = ((1, 12), (0, 10), (2, 14))
    values = render(model, region)[..., 0]
    level = float(np.median(values))
    monkeypatch.setattr(render_module, "SLAB_VALUES", 300)  # slabs of 2 slices: many seams
    out = tmp_path / f"surface{suffix}"
    raw_level = (level + 1) * 127.5
    assert main(["render", str(model), "--region", "1:12,:,2:14", "--out", str(out),
                 "--level", repr(raw_level), "--no-progress"]) == 0
    verts = read_mesh_vertices(out)
    whole, _, _, _ = marching_cubes(values, level)
    expected = (whole + np.asarray([1, 0, 2]))[:, ::-1]  # region offset; x, y, z order
    # the same surface: every vertex of each has one of the other within float32 rounding
    assert KDTree(expected).query(verts)[0].max() < 1e-3
    assert KDTree(verts).query(expected)[0].max() < 1e-3


def read_mesh_vertices(path: Path) -> np.ndarray:
    if path.suffix == ".obj":
        return np.asarray([[float(x) for x in line.split()[1:]]
                           for line in path.read_text().splitlines() if line.startswith("v ")])
    data = path.read_bytes()
    header, body = data.split(b"end_header\n", 1)
    count = int(header.split(b"element vertex ")[1].split(b"\n")[0])
    faces = int(header.split(b"element face ")[1].split(b"\n")[0])
    assert len(body) == count * 12 + faces * 13 and faces > 0
    return np.frombuffer(body[:count * 12], "<f4").reshape(count, 3).astype(np.float64)


def test_outputs_must_suit_the_signal(video, tmp_path, capsys):
    for name, message in [("a.wav", ".wav output is for audio signals"),
                          ("a.ply", ".ply output is for volume signals"),
                          ("a.tif", "must end in one of")]:
        assert main(["render", str(video), "--out", str(tmp_path / name), "--no-progress"]) == 2
        assert message in capsys.readouterr().err


def test_compare_prints_the_psnr_of_the_region(tmp_path, capsys):
    config = Config().replace(path="builtin:astronaut@32x32", factors=[2, 2], params=800, steps=30,
                              out=str(tmp_path / "run"), tensorboard=False, progress=False)
    result = train(config)
    capsys.readouterr()
    assert main(["render", str(tmp_path / "run" / "model"), "--out", str(tmp_path / "all.png"),
                 "--compare", "builtin:astronaut@32x32", "--no-progress"]) == 0
    assert f"PSNR of the region against builtin:astronaut@32x32: {result.final.psnr:.2f} dB" \
        in capsys.readouterr().out
    md = ModelDir.open(tmp_path / "run" / "model")
    model = md.load([3])
    score = evaluate(model, md.grid, builtin("astronaut@32x32"), [3]).psnr
    assert main(["render", str(md.path), "--region", "16:32,16:32", "--out",
                 str(tmp_path / "q.npy"), "--compare", "builtin:astronaut@32x32",
                 "--no-progress"]) == 0
    assert f"{score:.2f} dB" in capsys.readouterr().out
