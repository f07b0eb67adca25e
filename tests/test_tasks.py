"""The downstream tasks: super-resolution, denoising and CT reconstruction, on real signals."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import distlg
from distlg.cli import main
from distlg.config import Config
from distlg.data.degrade import ct_angles, sinogram
from distlg.data.ingest import IngestOptions, ingest
from distlg.data.sources.builtin import builtin
from distlg.data.store import open_signal
from distlg.geometry import PartitionGrid
from distlg.metrics import psnr
from distlg.rendering.region import RenderGrid
from distlg.rendering.render import render
from distlg.training import measured as measure


def _store(tmp_path, name: str, source: str, **options):
    return ingest(source, tmp_path / name, IngestOptions(progress=False, **options)).path


def _train(store, out, **settings):
    config = Config().replace(path=str(store), out=str(out), tensorboard=False, progress=False,
                              threads=1, **settings)
    return distlg.train(config)


def _compare(capsys, model, against, *args) -> tuple[float, float | None]:
    """PSNR and SSIM that ``distlg render MODEL --compare AGAINST`` prints."""
    capsys.readouterr()
    out = model.parent / "render.npy"
    assert main(["render", str(model), "--out", str(out), "--compare", str(against),
                 "--no-progress", *args]) == 0
    text = capsys.readouterr().out
    value = float(re.search(r"PSNR of the region against .*: ([\d.]+) dB", text).group(1))
    ssim = re.search(r"SSIM ([\d.]+)", text)
    out.unlink()
    return value, float(ssim.group(1)) if ssim else None


def _render(capsys, model, name: str, *args) -> Path:
    """What ``distlg render MODEL --out NAME ARGS`` writes (beside the model)."""
    out = model.parent / name
    assert main(["render", str(model), "--out", str(out), "--no-progress", *args]) == 0
    capsys.readouterr()
    return out


def _exit_code(argv: list[str]) -> int:
    """``distlg ARGV``'s exit code, also where argparse itself refuses an option."""
    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return psnr(float(np.mean((np.clip(a, -1, 1) - b) ** 2)), 2.0)


# -- super-resolution --------------------------------------------------------------------------
def test_downsample_stores_block_means_and_records_the_original(tmp_path):
    image = builtin("astronaut@64x64").data
    low = open_signal(_store(tmp_path, "lr.zarr", "builtin:astronaut@64x64", downsample=4))
    assert low.shape == (16, 16) and low.data.dtype == np.uint8
    expected = image.reshape(16, 4, 16, 4, 3).mean(axis=(1, 3))
    assert np.abs(low.data[:].astype(float) - expected).max() <= 0.5
    assert low.info.downsample == 4 and low.info.original_shape == (64, 64)


def test_volumes_and_audio_downsample_along_every_axis(tmp_path, capsys):
    """Blocks of F samples per axis (F^3 in a volume), the sample rate divided by F; a model
    of the small clip renders at --scale F on the original's grid, and the trainer's score
    is of its footprint means."""
    rng = np.random.default_rng(0)
    volume = rng.integers(0, 255, (16, 20, 24), dtype=np.uint8)
    np.save(tmp_path / "vol.npy", volume)
    low = open_signal(_store(tmp_path, "vol4.zarr", str(tmp_path / "vol.npy"), downsample=4))
    expected = volume.reshape(4, 4, 5, 4, 6, 4).astype(float).mean(axis=(1, 3, 5))
    assert low.shape == (4, 5, 6) and np.abs(low.data[:][..., 0] - expected).max() <= 0.5
    assert low.info.original_shape == (16, 20, 24)
    assert _exit_code(["ingest", str(tmp_path / "vol.npy"), str(tmp_path / "x.zarr"),
                       "--downsample", "3", "--no-progress"]) == 2
    assert "does not divide the 16x20x24 volume" in capsys.readouterr().err
    t = np.arange(8000) / 8000
    clip = (0.5 * np.sin(2 * np.pi * 50 * t)).astype(np.float32)
    np.save(tmp_path / "clip.npy", clip)
    options = dict(kind="audio", sample_rate=8000)
    small = open_signal(_store(tmp_path, "clip4.zarr", str(tmp_path / "clip.npy"), downsample=4,
                               **options))
    assert small.shape == (2000,) and small.info.sample_rate == 2000
    np.testing.assert_allclose(small.data[:][..., 0], clip.reshape(2000, 4).mean(1), atol=1e-6)
    full = _store(tmp_path, "clip.zarr", str(tmp_path / "clip.npy"), **options)
    run = _train(tmp_path / "clip4.zarr", tmp_path / "run", arch="siren", w0=10.0, steps=300,
                 lr=1e-3, schedule="constant")  # the schedule the numbers below were written at
    fine = np.load(_render(capsys, run.model_dir, "x4.npy", "--scale", "4"))
    assert fine.shape == (8000, 1)
    means = small.normalise(fine).reshape(2000, 4).astype(np.float64).mean(axis=1)
    mse = np.mean((np.clip(means, -1, 1) - small.normalise(small.data[:])[:, 0]) ** 2)
    assert run.final.psnr == pytest.approx(psnr(mse, small.psnr_peak), abs=0.15)  # 33.4 written
    # on the original's grid (linear interpolation does far better on a pure tone: 52 dB)
    assert _compare(capsys, run.model_dir, full, "--scale", "4")[0] > 25.0  # 28.8 when written


def test_footprint_positions_are_the_render_grid_at_that_scale():
    """The sub-positions the footprint loss evaluates for low-resolution sample i are the
    positions ``render --scale F`` gives original pixels i F ... i F + F - 1."""
    grid = PartitionGrid((16, 12), (2, 2))
    factor = 4
    offsets = measure.footprint_offsets(grid, factor).numpy()           # [F^2, 2], C order
    render = RenderGrid(((0, 16), (0, 12)), (factor, factor))
    ys, xs = render.coords(grid, 0), render.coords(grid, 1)
    for i, j in [(0, 0), (5, 7), (15, 11)]:
        centre = grid.normalise(np.asarray([[i, j]]))[0]
        expected = np.stack(np.meshgrid(ys[i * factor:(i + 1) * factor],
                                        xs[j * factor:(j + 1) * factor], indexing="ij"), -1)
        assert np.allclose(centre + offsets, expected.reshape(-1, 2), atol=1e-6)


def test_super_resolution_beats_bicubic(tmp_path, capsys):
    hr = _store(tmp_path, "hr.zarr", "builtin:camera@128x128")
    lr = _store(tmp_path, "lr.zarr", "builtin:camera@128x128", downsample=4)
    run = _train(lr, tmp_path / "run", arch="siren", w0=10.0, compression=0.25, lr=1e-3, steps=300)
    sr, ssim = _compare(capsys, run.model_dir, hr, "--scale", "4")
    truth, low = (open_signal(p) for p in (hr, lr))
    x = truth.normalise(truth.data[:])
    small = torch.from_numpy(low.normalise(low.data[:])).permute(2, 0, 1)[None]
    bicubic = F.interpolate(small, scale_factor=4, mode="bicubic", align_corners=False)
    bicubic = bicubic[0].permute(1, 2, 0).numpy()
    assert sr > _psnr(bicubic, x) + 0.1  # 25.03 vs 24.64 dB when written
    assert 0 < ssim <= 1
    # the trainer scores what it fits, the model's footprint means against the block means:
    # render at scale 4, averaged over 4x4 blocks, against the store
    fine = low.normalise(np.load(_render(capsys, run.model_dir, "x4.npy", "--scale", "4")))
    means = fine.reshape(32, 4, 32, 4, -1).astype(np.float64).mean(axis=(1, 3))
    stored = low.normalise(low.data[:])
    assert run.final.psnr == pytest.approx(_psnr(means, stored), abs=0.25)  # uint8 render
    points = low.normalise(np.load(_render(capsys, run.model_dir, "x1.npy")))  # at the block centres
    assert run.final.psnr > _psnr(points, stored) + 1, _psnr(points, stored)


def test_compare_at_a_scale_needs_the_signal_at_that_scale(tmp_path, capsys):
    lr = _store(tmp_path, "lr.zarr", "builtin:camera@64x64", downsample=2)
    run = _train(lr, tmp_path / "run", steps=2)
    assert main(["render", str(run.model_dir), "--out", str(tmp_path / "x.npy"), "--scale", "2",
                 "--compare", str(lr), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not hold the region" in err and len(err.splitlines()) == 1


# -- denoising ---------------------------------------------------------------------------------
def test_noise_is_seeded_at_its_level_and_recorded(tmp_path):
    a = open_signal(_store(tmp_path, "a.zarr", "builtin:camera@64x64", noise="gaussian:0.1"))
    b = open_signal(_store(tmp_path, "b.zarr", "builtin:camera@64x64", noise="gaussian:0.1"))
    c = open_signal(_store(tmp_path, "c.zarr", "builtin:camera@64x64", noise="gaussian:0.1",
                           noise_seed=1))
    assert np.array_equal(a.data[:], b.data[:]) and not np.array_equal(a.data[:], c.data[:])
    clean = builtin("camera@64x64").data.astype(np.float64) / 255
    residual = a.data[:] / 255 - clean
    inside = (clean > 0.3) & (clean < 0.7)  # away from the clipping at 0 and 1
    assert residual[inside].std() == pytest.approx(0.1, rel=0.1)
    assert a.info.noise == "gaussian:0.1" and a.value_range == (0.0, 255.0)
    poisson = open_signal(_store(tmp_path, "p.zarr", "builtin:camera@64x64", noise="poisson:30"))
    assert np.all(np.isclose(poisson.data[:] / 255 * 30, np.round(poisson.data[:] / 255 * 30),
                             atol=1e-3) | (poisson.data[:] == 255))


def test_streamed_noise_is_the_same_whatever_the_slabs(tmp_path):
    """Video, volumes and audio get their noise a slab at a time: each value depends on the
    seed and its position only (a resumed ingest writes what an uninterrupted one would)."""
    from distlg.data.degrade import apply
    from distlg.data.sources.base import array_source

    rng = np.random.default_rng(1)
    volume = rng.random((12, 10, 8)).astype(np.float32)
    source = array_source("v.npy", volume.nbytes, "volume", volume, {}, {})
    noisy = apply(source, None, "gaussian:0.1", 3, None)
    whole = np.concatenate(list(noisy.slabs(0, 12)))
    for rows in (1, 5):
        parts = np.concatenate([np.concatenate(list(noisy.slabs(s, rows))[:1]) for s in range(0, 12, rows)])
        assert np.array_equal(parts, whole)
    assert np.array_equal(np.concatenate(list(noisy.slabs(7, 2))), whole[7:])
    residual, inside = whole[..., 0] - volume, (volume > 0.3) & (volume < 0.7)
    assert residual[inside].std() == pytest.approx(0.1, rel=0.1)
    assert noisy.meta["noise"] == "gaussian:0.1"
    assert noisy.value_range == (float(volume.min()), float(volume.max()))  # a float volume's
    lo, hi = noisy.value_range
    photons = np.concatenate(list(apply(source, None, "poisson:20", 3, None).slabs(0, 4)))
    counts = (photons - lo) / (hi - lo) * 20
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-3)  # photon counts
    assert not np.array_equal(whole, np.concatenate(list(apply(source, None, "gaussian:0.1", 4,
                                                               None).slabs(0, 12))))


def test_denoising_beats_the_noisy_input(tmp_path, capsys):
    clean = _store(tmp_path, "clean.zarr", "builtin:astronaut@64x64")
    noisy = _store(tmp_path, "noisy.zarr", "builtin:astronaut@64x64", noise="gaussian:0.1")
    a, b = open_signal(clean), open_signal(noisy)
    noisy_psnr = _psnr(b.normalise(b.data[:]), a.normalise(a.data[:]))
    run = _train(noisy, tmp_path / "run")  # the defaults for a noisy store
    denoised, _ = _compare(capsys, run.model_dir, clean)
    assert denoised > noisy_psnr + 1.0


# -- CT ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [63, 64])
def test_radon_matches_skimage(n):
    image = builtin(f"phantom@{n}").data[..., 0]
    angles = ct_angles(30)
    ours = measure.Radon(n, angles, torch.device("cpu"))(torch.from_numpy(image.copy())).numpy()
    reference = sinogram(image, angles)
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() <= 1e-5 * np.abs(reference).max()


def test_ct_training_reconstructs_the_phantom(tmp_path):
    store = _store(tmp_path, "ct.zarr", "builtin:phantom@64", ct_angles=30)
    signal = open_signal(store)
    assert measure.operator(signal) == "radon"
    run = _train(store, tmp_path / "run", steps=300, lr=2e-3)
    assert run.final.psnr >= 18.0  # against the phantom stored as the reference


CT_CONFIG = """
signal: {path: "%s"}
partition: {factors: [2, 2]}
model: {params: 1500}
train: {lr: 0.002, seed: 3, log_every: 1}
run: {tensorboard: false, progress: false}
"""


@pytest.mark.multiprocess
@pytest.mark.parametrize("arch,steps", [("local-global", 15), ("local-global-incode", 1)])
def test_ct_two_workers_compute_what_one_process_computes(tmp_path, arch, steps):
    """INCODE: a step (over steps the runs drift apart, ``test_incode`` says why)."""
    from test_distributed import assert_same_model, command, losses

    store = _store(tmp_path, "ct.zarr", "builtin:phantom@32", ct_angles=12)
    config = tmp_path / "ct.yaml"
    config.write_text(CT_CONFIG % store)
    for workers in (1, 2):
        proc = subprocess.run(command(workers, str(config), "--arch", arch, "--steps", str(steps),
                                      "--out", str(tmp_path / f"w{workers}")),
                              capture_output=True, text=True, timeout=240)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert_same_model(tmp_path / "w1" / "model", tmp_path / "w2" / "model")
    if "incode" in arch:  # the harmonizer stepped alike: its coefficients agree
        from distlg.modeldir.format import ModelDir
        from distlg.nn.model import COEFFICIENTS

        a, b = (ModelDir.open(tmp_path / w / "model").read_global()[COEFFICIENTS] for w in ("w1", "w2"))
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    one, two = losses(tmp_path / "w1"), losses(tmp_path / "w2")
    assert sorted(one) == sorted(two) == list(range(1, steps + 1))
    for step in one:
        assert one[step] == pytest.approx(two[step], rel=1e-5)


def test_a_measured_sinogram_trains_to_the_image_it_projects(tmp_path, capsys):
    """ingest --sinogram: the phantom's sinogram as a measurement (no reference image). The
    store holds it as given, a back-projection as the n x n image (n = detectors / sqrt 2);
    training scores the projections, and the model reconstructs the phantom."""
    phantom = builtin("phantom@64")
    truth = phantom.normalise(phantom.data[:])[..., 0] * 0.5 + 0.5        # [0, 1]
    sino = sinogram(truth, ct_angles(30))
    np.save(tmp_path / "sino.npy", sino)
    store = _store(tmp_path, "ct.zarr", str(tmp_path / "sino.npy"), sinogram=True)
    signal = open_signal(store)
    desc = signal.info.measurement
    assert signal.shape == (64, 64) and desc.reference is False
    assert np.array_equal(measure.load_sinogram(signal), sino)
    np.testing.assert_allclose(desc.angles, ct_angles(30))
    lo, hi = signal.value_range
    assert lo < 0 and hi > 1                        # the back-projection's range, widened
    capsys.readouterr()
    assert main(["info", str(store)]) == 0
    assert "CT: sinogram 91 x 30 at 30 angles; measured" in capsys.readouterr().out
    run = _train(store, tmp_path / "run", factors=[2, 2], steps=300, lr=2e-3)
    image = (np.clip(render(run.model_dir)[..., 0], -1, 1) + 1) / 2 * (hi - lo) + lo
    radon = measure.Radon(64, ct_angles(30), torch.device("cpu"), sino.shape[0])
    projected = radon(torch.from_numpy(image.astype(np.float32))).numpy()
    mse = np.mean((projected - sino) ** 2, dtype=np.float64)
    assert run.final.psnr == pytest.approx(psnr(mse, float(sino.max() - sino.min())), abs=0.05)
    assert psnr(np.mean((np.clip(image, 0, 1) - truth) ** 2), 1.0) > 19.0  # 22.0 when written


# -- errors ------------------------------------------------------------------------------------
@pytest.mark.parametrize("args,message", [
    (["--downsample", "1.5"], "invalid int value"),
    (["--downsample", "3"], "does not divide the 64x64 image"),
    (["--downsample", "128"], "larger than the 64x64 image"),
    (["--noise", "laplace:0.1"], "unknown noise kind 'laplace'"),
    (["--noise", "gaussian:loud"], "the level must be a number"),
    (["--noise", "poisson:-3"], "the level must be a positive number"),
    (["--ct-angles", "30"], "--ct-angles needs a square single-channel image"),
    (["--ct-angles", "30", "--noise", "gaussian:0.1"], "ingest it without --noise"),
])
def test_bad_task_options_are_one_line_errors(tmp_path, capsys, args, message):
    out = tmp_path / "x.zarr"
    assert _exit_code(["ingest", "builtin:astronaut@64x64", str(out), "--no-progress", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_incode_on_a_ct_store_harmonizes_the_sinogram_not_the_image(tmp_path, monkeypatch):
    """The harmonizer reads the measurements (the image is the reference the reconstruction
    is scored against): a one-channel [1, 1, detectors, angles] view of the sinogram."""
    from distlg.nn import incode

    store = _store(tmp_path, "ct.zarr", "builtin:phantom@32", ct_angles=8)
    signal = open_signal(store)
    seen = []
    build = incode.build
    monkeypatch.setattr(incode, "read_preview", lambda *_: pytest.fail("read the image"))
    monkeypatch.setattr(incode, "build", lambda arch, preview, *a: seen.append(preview) or
                        build(arch, preview, *a))
    run = _train(store, tmp_path / "run", arch="local-global-incode", factors=[2, 2], params=1500,
                 steps=60, lr=2e-3)
    sino = measure.load_sinogram(signal)
    assert seen[0].shape == (1, 1, *sino.shape)
    torch.testing.assert_close(seen[0][0, 0], torch.from_numpy(sino / sino.max() * 2 - 1))
    assert run.final.psnr > 16.0  # through the projections (a step: 7.9 dB; Local-Global SIREN: 18.1)


def test_a_ct_store_without_its_sinogram_is_a_one_line_error(tmp_path, capsys):
    import shutil

    store = _store(tmp_path, "ct.zarr", "builtin:phantom@32", ct_angles=8)
    shutil.rmtree(store / "sinogram")
    assert main(["train", "--signal", str(store), "--steps", "1", "--out", str(tmp_path / "run"),
                 "--no-progress", "--no-tensorboard"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot read the store's sinogram" in err and len(err.splitlines()) == 1


def test_a_ct_store_records_its_angles_and_sinogram(tmp_path):
    store = _store(tmp_path, "ct.zarr", "builtin:phantom@32", ct_angles=8)
    desc = json.loads((store / "zarr.json").read_text())["attributes"]["distlg"]["meta"]
    assert desc["measurement"]["angles"] == [22.5 * i for i in range(8)]
    assert (store / "sinogram" / "zarr.json").is_file()
