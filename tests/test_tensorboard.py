"""TensorBoard at every evaluation: the fixed views (truth, reconstruction, error) as images,
and loss, learning rate and throughput as scalars."""

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from distlg.cli import main
from distlg.data.signal import Signal
from distlg.geometry import PartitionGrid
from distlg.nn.model import INR, Architecture
from distlg.training.distributed import World
from distlg.training.tracking import fixed_views, view_positions


def events(run):
    """The run's TensorBoard log (accelerate writes the run's settings into a folder below)."""
    files = sorted(run.rglob("events.out.tfevents.*"), key=lambda f: len(f.parts))
    assert files, list(run.rglob("*"))
    acc = EventAccumulator(str(files[0].parent), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_every_evaluation_logs_the_fixed_view_and_the_scalars(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--signal", "builtin:camera@48x64", "--steps", "30", "--eval-every", "10",
                 "--log-every", "10", "--out", str(run), "--no-progress"]) == 0
    acc = events(run)
    images = acc.Images("view/image")
    assert [e.step for e in images] == [10, 20, 30]  # two evaluations during training, the final
    assert (images[0].height, images[0].width) == (48, 3 * 64 + 8)  # truth | model | error
    assert images[0].encoded_image_string != images[-1].encoded_image_string  # it learns
    for tag in ("train/loss", "train/lr", "train/samples_per_s", "eval/psnr"):
        assert [e.step for e in acc.Scalars(tag)] == [10, 20, 30], tag
    assert all(e.value > 0 for e in acc.Scalars("train/samples_per_s"))


@pytest.mark.parametrize("kind,shape,names", [
    ("video", (6, 40, 30), ["frame"]),
    ("volume", (20, 24, 16), ["slice_z", "slice_y", "slice_x"]),
    ("audio", (3000,), ["waveform"]),
])
def test_the_fixed_views_of_each_kind(kind, shape, names):
    grid = PartitionGrid(shape, (2,) * len(shape))
    arch = Architecture("local-global", len(shape), 1, hidden_layers=2, local_width=8, global_width=12)
    model = INR(arch, range(grid.num_partitions), seed=0)
    data = np.random.default_rng(0).uniform(-1, 1, shape + (1,)).astype(np.float32)
    signal = Signal(data, kind, (-1.0, 1.0))
    views = fixed_views(model, grid, signal, World())
    assert sorted(views) == sorted(names)
    if kind == "audio":
        assert views["waveform"].shape == (3 * 96, 1024, 3)
        return
    positions = view_positions(shape, kind)
    for name, picture in views.items():
        h, w = [len(p) for p in positions[name] if len(p) > 1]
        assert picture.shape == (h, 3 * w + 8, 3) and picture.dtype == np.uint8
        truth = picture[:, :w, 0]
        expected = np.rint((data[np.ix_(*positions[name])].squeeze() + 1) * 127.5)
        assert np.array_equal(truth, expected.reshape(h, w))


def test_a_workers_shard_renders_only_its_partitions():
    shape = (32, 32)
    grid = PartitionGrid(shape, (2, 2))
    arch = Architecture("local-global", 2, 1, hidden_layers=2, local_width=8, global_width=12)
    from distlg.rendering.sampled import render_positions

    whole, held = render_positions(INR(arch, range(4), seed=0), grid, view_positions(shape, "image")["image"])
    part, some = render_positions(INR(arch, [0, 3], seed=0), grid, view_positions(shape, "image")["image"])
    assert held.all() and some[:16, :16].all() and not some[:16, 16:].any()
    np.testing.assert_array_equal(part[some], whole[some])


@pytest.mark.multiprocess
def test_two_workers_log_the_pictures_one_process_logs(tmp_path):
    """Each of 2 workers renders its own partitions; the main worker's picture is the one a
    single process logs (same weights at step 10, same pixels)."""
    import subprocess

    from test_distributed import command

    args = ["--signal", "builtin:camera@48x64", "--steps", "10", "--eval-every", "10", "--seed", "3",
            "--no-progress"]
    assert main(["train", *args, "--out", str(tmp_path / "one")]) == 0
    proc = subprocess.run(command(2, *args, "--out", str(tmp_path / "two")), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    one, two = (events(tmp_path / name).Images("view/image") for name in ("one", "two"))
    assert [e.step for e in two] == [10] and (two[0].height, two[0].width) == (48, 200)
    decode = __import__("imageio.v3", fromlist=["imread"]).imread
    a, b = decode(one[0].encoded_image_string), decode(two[0].encoded_image_string)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1  # summation order: a rounding step
