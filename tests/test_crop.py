"""Cropping: weights fall in proportion and the kept region renders bit for bit as before."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from modelkit import bikes_clip, random_model, stored_partitions

from distlg.cli import main
from distlg.config import Config
from distlg.data.signal import Signal
from distlg.modeldir.crop import crop, select
from distlg.modeldir.format import ModelDir, ModelDirError
from distlg.rendering.render import RenderError, render
from distlg.training.trainer import train


@pytest.fixture(scope="module")
def video_model(tmp_path_factory):
    """A Local-Global model of 16 frames of bikes.mp4 at 32x32, 4 x 2 x 2 partitions."""
    from modelkit import SHARED

    if not SHARED.is_dir():
        pytest.skip(f"shared test data not found at {SHARED}")
    out = tmp_path_factory.mktemp("video")
    config = Config().replace(out=str(out), factors=[4, 2, 2], local_width=16, global_width=16,
                              samples_per_partition=256, steps=150, lr=5e-4, tensorboard=False,
                              progress=False)
    result = train(config, signal=Signal.from_array(bikes_clip(), "video"))
    assert result.final.psnr > 25  # a real model of the clip, not noise
    return out / "model"


def test_crop_a_trained_video_to_half_its_frames_and_a_window(video_model, tmp_path, capsys):
    out = tmp_path / "cropped"
    assert main(["crop", str(video_model), str(out), "--keep", "0:8,0:16,0:16"]) == 0
    printed = capsys.readouterr().out
    full, cropped = ModelDir.open(video_model), ModelDir.open(out)
    assert cropped.partition_ids == [0, 4]  # frames 0-3 and 4-7, top-left window
    assert sorted(stored_partitions(out)) == [0, 4]  # the dropped partitions' bytes are gone
    before, after = full.params(), cropped.params()
    assert after["global"] == before["global"]
    assert after["local"] * 16 == before["local"] * 2  # in proportion to the partitions kept
    assert f"weights before: {before['total']:,} weights" in printed
    assert f"weights after:  {after['total']:,} weights" in printed
    region = ((0, 8), (0, 16), (0, 16))
    assert np.array_equal(render(cropped, region), render(full, region))
    assert np.array_equal(render(out, ((2, 7), (3, 11), (5, 16)), scale=2),
                          render(video_model, ((2, 7), (3, 11), (5, 16)), scale=2))


def test_crop_in_place_deletes_the_dropped_files(tmp_path):
    model = random_model(tmp_path / "m", (12, 30, 20), (3, 3, 2), "video")
    region = ((0, 12), (10, 20), (0, 20))
    reference = render(model, region)
    report = crop(model, select(ModelDir.open(model), drop_along=[(1, [0, 2])]))
    assert report.path == model and len(report.kept) == 6 and len(report.dropped) == 12
    assert stored_partitions(model) == report.kept
    assert report.after["local"] * 3 == report.before["local"]
    assert np.array_equal(render(model, region), reference)


def test_selections_combine(tmp_path):
    md = ModelDir.open(random_model(tmp_path / "m", (12, 30, 20), (3, 3, 2), "video"))
    grid = md.grid
    assert select(md, keep=[((0, 4), (0, 10), (0, 10))]) == [0]
    assert select(md, keep=[((0, 4), (0, 10), (0, 10)), ((11, 12), (29, 30), (19, 20))]) == [0, 17]
    assert select(md, keep=[((0, 5), (0, 30), (0, 20))]) == list(range(12))  # frame 4: layer 1
    dropped = set(range(18)) - set(select(md, drop=[((4, 5), (9, 11), (0, 1))]))
    assert dropped == {grid.pid((1, i, 0)) for i in (0, 1)}
    assert select(md, drop_ids=[0, 5], drop_along=[(0, [2])]) == [1, 2, 3, 4] + list(range(6, 12))
    with pytest.raises(ModelDirError, match="partitions 18, 20 do not exist"):
        select(md, drop_ids=[18, 20])
    with pytest.raises(ModelDirError, match="axis y has partition indices 0-2, got 3"):
        select(md, drop_along=[(1, [3])])
    with pytest.raises(ModelDirError, match="leave no partition"):
        select(md, drop_along=[(0, [0, 1, 2])])


def test_crop_command_refuses_bad_requests(tmp_path, capsys):
    model = random_model(tmp_path / "m", (12, 30), (2, 3), "image")
    for argv, message in [
        ([str(model), "--keep", "0:6"], "give either OUT or --in-place"),
        ([str(model), str(tmp_path / "o"), "--in-place", "--keep", "0:6"], "either OUT or --in-place"),
        ([str(model), str(tmp_path / "o")], "nothing to crop"),
        ([str(model), str(model), "--keep", "0:6"], "is the model itself; use --in-place"),
        ([str(model), str(tmp_path / "o"), "--keep", "0:13"], "axis y: 0:13 lies outside"),
        ([str(model), str(tmp_path / "o"), "--drop-along", "z=0"], "unknown axis 'z'"),
    ]:
        assert main(["crop", *argv]) == 2
        assert message in capsys.readouterr().err
    assert stored_partitions(model) == list(range(6))


@settings(max_examples=12, deadline=None)
@given(st.data())
def test_cropping_never_changes_what_kept_partitions_render(tmp_path_factory, data):
    shape, factors = (10, 21, 16), (2, 3, 4)
    path = tmp_path_factory.mktemp("prop") / "m"
    model = random_model(path, shape, factors, "video", overlaps=(1, 1, 1), seed=3)
    md = ModelDir.open(model)
    kept = sorted(data.draw(st.sets(st.integers(0, 23), min_size=1, max_size=23)))
    region = tuple(tuple(sorted(data.draw(st.lists(st.integers(0, d), min_size=2, max_size=2,
                                                   unique=True)))) for d in shape)
    needed = md.grid.intersecting(region)
    reference = render(md, region)
    crop(md, kept)
    if set(needed) <= set(kept):
        assert np.array_equal(render(model, region), reference)
    else:
        with pytest.raises(RenderError, match="does not hold"):
            render(model, region)
