"""Faults 1 and 4: a render that fails or is interrupted leaves nothing under the output's
name, and a render never overwrites any file it would write (PNG frames included)."""

from pathlib import Path

import pytest
from helpers import one_line, snapshot
from modelkit import damage, random_model

import distlg.rendering.render as render_module
from distlg.cli import main
from distlg.modeldir.format import ModelDir


@pytest.fixture
def video(tmp_path):
    return random_model(tmp_path / "video", (8, 12, 16), (4, 2, 2), "video")


@pytest.fixture
def volume(tmp_path):
    return random_model(tmp_path / "volume", (8, 10, 12), (4, 2, 2), "volume", channels=1)


def _tamper_last_layer(model: Path) -> None:
    """Change the weights of the last partition: a render fails only after writing slabs."""
    damage(model, max(ModelDir.open(model).partition_ids))


def _render(model: Path, out: Path, *extra: str) -> int:
    return main(["render", str(model), "--out", str(out), "--no-progress", *extra])


CASES = [("video", "r.zarr"), ("video", "r.npy"), ("video", "r.mp4"), ("video", "r.png"),
         ("volume", "r.ply"), ("volume", "r.obj")]


@pytest.mark.parametrize("which, name", CASES)
def test_a_failed_render_leaves_nothing(which, name, request, tmp_path, capsys, monkeypatch):
    model = request.getfixturevalue(which)
    monkeypatch.setattr(render_module, "SLAB_VALUES", 200)  # many slabs: some written first
    _tamper_last_layer(model)
    before = snapshot(model)
    outdir = tmp_path / "out"
    outdir.mkdir()
    assert _render(model, outdir / name) == 2
    one_line(capsys.readouterr().err, "fails its checksum", "nothing was written to")
    assert list(outdir.iterdir()) == []
    assert snapshot(model) == before


@pytest.mark.parametrize("which, name", CASES)
def test_an_interrupted_render_leaves_nothing(which, name, request, tmp_path, capsys,
                                              monkeypatch):
    model = request.getfixturevalue(which)
    monkeypatch.setattr(render_module, "SLAB_VALUES", 200)
    slabs = render_module.RegionRender.__iter__

    def interrupted(self):
        for k, slab in enumerate(slabs(self)):
            if k == 2:
                raise KeyboardInterrupt
            yield slab

    monkeypatch.setattr(render_module.RegionRender, "__iter__", interrupted)
    outdir = tmp_path / "out"
    outdir.mkdir()
    assert _render(model, outdir / name) == 130
    one_line(capsys.readouterr().err, "interrupted", "nothing was written to")
    assert list(outdir.iterdir()) == []


def test_a_finished_render_leaves_only_its_output(video, tmp_path):
    outdir = tmp_path / "out"
    assert _render(video, outdir / "r.png") == 0
    assert sorted(p.name for p in outdir.iterdir()) == [f"r-{k:06d}.png" for k in range(8)]


def test_png_frames_are_never_overwritten(video, tmp_path, capsys):
    """Fault 4: NAME.png of a video writes NAME-000000.png ...; each is checked first."""
    outdir = tmp_path / "out"
    outdir.mkdir()
    (outdir / "r-000005.png").write_bytes(b"mine")
    before = snapshot(outdir)
    assert _render(video, outdir / "r.png") == 2
    one_line(capsys.readouterr().err, "r-000005.png already exists")
    assert snapshot(outdir) == before


@pytest.fixture
def gray(tmp_path):
    return random_model(tmp_path / "gray", (32, 32), (2, 2), "image", channels=1)


def _refused(model: Path, tmp_path: Path, capsys, name: str, *extra: str) -> str:
    """Render ``model`` with ``extra``: status 2, one line, nothing in the output folder, the
    model as it was; the line."""
    before = snapshot(model)
    outdir = tmp_path / "out"
    outdir.mkdir(exist_ok=True)
    try:
        status = _render(model, outdir / name, *extra)
    except SystemExit as exc:  # argparse's refusals
        status = exc.code
    assert status == 2
    assert list(outdir.iterdir()) == []
    assert snapshot(model) == before
    return one_line(capsys.readouterr().err)


def test_compare_with_other_channels_is_refused_before_rendering(gray, tmp_path, capsys):
    """An RGB signal against a grayscale model: refused before anything is rendered (SSIM used
    to fail after the output was written)."""
    line = _refused(gray, tmp_path, capsys, "r.npy", "--compare", "builtin:astronaut@32x32")
    assert "3 channel(s), the model 1" in line


@pytest.mark.parametrize("option, words", [
    (("--threads", "-3"), ("--threads", "positive", "'-3'")),
    (("--threads", "0"), ("--threads", "positive", "'0'")),
    (("--device", "foo"), ("unknown device 'foo'",)),
    (("--device", "meta"), ("device meta cannot be used",)),
])
def test_bad_threads_and_devices_are_one_line(option, words, gray, tmp_path, capsys):
    line = _refused(gray, tmp_path, capsys, "r.npy", *option)
    for word in words:
        assert word in line, line


def test_a_missing_cuda_device_is_one_line(gray, tmp_path, capsys):
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    line = _refused(gray, tmp_path, capsys, "r.npy", "--device", f"cuda:{count}")
    assert f"device cuda:{count} cannot be used" in line


@pytest.mark.parametrize("region", ["y=0:10,y=5:6", "x=0:4,1=2:3"])
def test_an_axis_named_twice_is_refused(region, gray, tmp_path, capsys):
    line = _refused(gray, tmp_path, capsys, "r.npy", "--region", region)
    assert "is given twice" in line and region in line


@pytest.mark.parametrize("level, words", [("nan", ("finite", "nan")), ("inf", ("finite", "inf")),
                                          ("1e9", ("outside", "0 to 255", "empty")),
                                          ("-1", ("outside", "0 to 255", "empty"))])
@pytest.mark.parametrize("name", ["r.ply", "r.obj"])
def test_a_mesh_level_without_a_surface_is_refused(level, words, name, volume, tmp_path, capsys):
    line = _refused(volume, tmp_path, capsys, name, "--level", level)
    for word in words:
        assert word in line, line
