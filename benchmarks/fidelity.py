"""Quality per kind of signal: Local-Global (distlg's recipe and the paper's) against
SIREN-per-partition and SIREN, at equal weights, at equal steps and at equal training time.

    python benchmarks/fidelity.py --kinds image            # the paper's image setting, 3 seeds
    python benchmarks/fidelity.py --kinds image audio --seeds 0 --steps-scale 0.5

Per kind and method: PSNR at the last step (mean ± spread over seeds), PSNR at equal time (each
run's last evaluation inside the training time of distlg's Local-Global run of the same seed),
PSNR in a band of 2 samples along the partition borders and in the interior (seams), and
seconds per step. SIREN runs one seed (it is the slow baseline). One thread per run; timings
compare only inside one run of this script. Writes results/fidelity.md and fidelity_<kind>.png.

Settings per kind (widths as ``distlg train`` picks them for the budget):
- image: scikit-image's astronaut 256x256, 49,152 weights, (8, 8), full batch, lr 5e-4, 2000 steps;
- audio: bach.wav (shared/data), C0 = 32 partitions, 5 % of the clip per step, lr 1e-4, 1000 steps;
- video: bikes.mp4 (ingested to storage/signals), the default video settings (2 % of the pixels
  per step), 1500 steps;
- volume: a 128^3 occupancy volume (scikit-image's binary blobs), the default volume settings.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import plot_training, run_config, write_results  # noqa: E402
from scale import METHODS  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SCRATCH = ROOT / "storage" / "bench" / "fidelity"
SHARED = ROOT.parent / "shared" / "data"
BAND = 2


def kind_settings(kind: str) -> dict:
    """Signal and training settings of one kind (see the module docstring)."""
    if kind == "image":
        return dict(path="builtin:astronaut@256x256", factors=[8, 8], params=49_152, steps=2000,
                    eval_every=100)
    if kind == "audio":
        return dict(path=_ingested(SHARED / "bach.wav", "bach.zarr"), sample_fraction=0.05,
                    steps=1000, eval_every=100)
    if kind == "video":
        return dict(path=_ingested(SHARED / "bikes.mp4", "bikes.zarr"), steps=1500, eval_every=150)
    if kind == "volume":
        return dict(path=_blobs(), steps=1500, eval_every=150)
    raise SystemExit(f"unknown kind {kind!r}")


def _ingested(source: Path, name: str, **options) -> str:
    from distlg.data.ingest import IngestOptions, ingest

    target = ROOT / "storage" / "signals" / name
    ingest(str(source), target, IngestOptions(**options))  # resumes / up to date when done
    return str(target)


def _blobs() -> str:
    from skimage.data import binary_blobs

    source = SCRATCH / "blobs-128.npy"
    if not source.exists():
        source.parent.mkdir(parents=True, exist_ok=True)
        np.save(source, binary_blobs(128, n_dim=3, volume_fraction=0.3, rng=0).astype(np.uint8) * 255)
    return _ingested(source, "blobs-128.zarr", kind="volume")


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
    evals = [h for h in history if "psnr" in h and h["time"] <= seconds * 1.0001]
    return evals[-1]["psnr"] if evals else math.nan


def run_kind(kind: str, seeds: list[int], steps_scale: float) -> tuple[list[str], dict]:
    from distlg.data.store import open_signal

    base = kind_settings(kind)
    base["steps"] = max(1, round(base["steps"] * steps_scale))
    signal = open_signal(base["path"])
    rows: dict[str, list[dict]] = {m: [] for m in METHODS}
    curves = {}
    for seed in seeds:
        budget = None
        for name, method in METHODS.items():
            if name == "SIREN" and seed != seeds[0]:
                continue
            settings = {**base, **method}
            if name == "SIREN":
                settings.pop("factors", None)
            t0 = time.perf_counter()
            r = run_config(signal=signal, seed=seed, threads=1,
                           out=str(SCRATCH / kind / f"{name.split()[0]}-{seed}"), **settings)
            if budget is None:  # distlg's Local-Global runs first: its training time is the budget
                budget = [h for h in r.history if "psnr" in h][-1]["time"]
            band, inner = seam_psnr(r, signal)
            rows[name].append(dict(psnr=r.final.psnr, equal_time=psnr_within(r.history, budget),
                                   band=band, inner=inner, step_s=r.seconds / r.steps_run,
                                   params=r.plan.arch.total_params(r.plan.grid.num_partitions),
                                   widths=(r.plan.arch.local_width, r.plan.arch.global_width)))
            curves[(name, seed)] = r
            print(f"{kind} {name} seed {seed}: {r.final.psnr:.2f} dB, equal time "
                  f"{rows[name][-1]['equal_time']:.2f}, seam {band:.2f} / {inner:.2f}, "
                  f"{r.seconds / r.steps_run:.3f} s/step ({time.perf_counter() - t0:.0f} s)", flush=True)
    return table(kind, rows, base["steps"]), curves


def _stat(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def table(kind: str, rows: dict, steps: int) -> list[str]:
    lines = [f"### {kind}", "", f"| method | widths local / global | weights | seeds | PSNR at {steps} "
             "steps | PSNR at equal time | seam band | interior | s/step |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, runs in rows.items():
        if not runs:
            continue
        lw, gw = runs[0]["widths"]
        lines.append(f"| {name} | {lw or '–'} / {gw or '–'} | {runs[0]['params']:,} | {len(runs)} | "
                     f"{_stat([r['psnr'] for r in runs])} | {_stat([r['equal_time'] for r in runs])} | "
                     f"{_stat([r['band'] for r in runs])} | {_stat([r['inner'] for r in runs])} | "
                     f"{statistics.mean(r['step_s'] for r in runs):.3f} |")
    lg = [r["psnr"] for r in rows["Local-Global (distlg)"]]
    pp = [r["psnr"] for r in rows["SIREN-per-partition"]]
    lg_t = [r["equal_time"] for r in rows["Local-Global (distlg)"]]
    pp_t = [r["equal_time"] for r in rows["SIREN-per-partition"]]
    si_t = [r["equal_time"] for r in rows["SIREN"]]
    gap = statistics.mean(lg) - statistics.mean(pp)
    lines += ["", f"Local-Global (distlg) vs per-partition: {gap:+.2f} dB "
              f"at equal steps (goal >= +0.5), {statistics.mean(lg_t) - statistics.mean(pp_t):+.2f} dB at "
              f"equal time (goal >= 0); vs SIREN at equal time: "
              f"{statistics.mean(lg_t[:len(si_t)]) - statistics.mean(si_t):+.2f} dB (goal >= 0).", ""]
    return lines


def plot(kind: str, curves: dict) -> str:
    runs = {f"{name} (seed {seed})": result for (name, seed), result in curves.items()}
    return plot_training(runs, f"fidelity_{kind}", f"{kind}: PSNR against steps and time")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", nargs="+", default=["image", "audio", "video", "volume"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--name", default="fidelity", help="results file: results/NAME.md")
    parser.add_argument("--steps-scale", type=float, default=1.0,
                        help="multiply every kind's steps by this (quicker, lower PSNR)")
    args = parser.parse_args()
    started = time.perf_counter()
    lines = []
    for kind in args.kinds:
        table_lines, curves = run_kind(kind, args.seeds, args.steps_scale)
        lines += table_lines + [f"![{kind}]({plot(kind, curves)})", ""]
    write_results(args.name, "Quality per kind: Local-Global against its baselines", lines,
                  f"Run time {(time.perf_counter() - started) / 60:.1f} minutes.")


if __name__ == "__main__":
    main()
