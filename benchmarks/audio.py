"""Audio (the paper's Table 11): Local-Global SIREN vs SIREN vs SIREN-per-partition.

    python benchmarks/audio.py             # ~12 minutes at 1 thread; writes results/audio.md
    python benchmarks/audio.py --quick     # smoke test (~1 minute): results/audio_quick.md

Both whole clips of ../shared/data: bach.wav (308,207 samples, 7.0 s at 44.1 kHz) and
counting.wav (537,936 samples, 12.2 s), ingested once into storage/bench/NAME.zarr; values
divided by their largest magnitude (both are already peak 1); time axis on [-100, 100] (the
paper's code); PSNR = -10 log10(MSE) on the [-1, 1] values over every sample (Table 11's).
C0 = 32 partitions for the partitioned methods (partitions of 9,632 / 16,811 samples), SIREN
one network. Equal budgets: about the paper's 198 K weights for each clip (fit per method:
Local-Global 42 local / 70 global = 197,236, per-partition 44 wide = 194,336, SIREN 256 wide
= 198,145), 3 hidden layers, w0 = 30, Adam at lr 1e-4 (the paper's), 1000 steps, seed 0, one
thread.

The one departure from the paper: it trains full batch (every sample every step), which costs
SIREN ~5-10 s a step at 1 thread on the whole clip (~2-3 hours for the 1000 steps of one clip).
Here every method draws the same 15,360 samples per step: 480 from each of the 32 partitions
(5.0 % of bach, 2.9 % of counting) for Local-Global and per-partition, 15,360 uniformly from
the clip for SIREN. PSNR is evaluated over the whole clip every 100 steps (off the clock):
final and best are reported.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, run_config, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CLIPS = ("bach", "counting")
PARTITIONS = 32
PARAMS = 198_000
SAMPLES_PER_PARTITION = 480
STEPS = 1000
LR = 1e-4
EVAL_EVERY = 100
METHODS = (("local-global", "Local-Global SIREN"), ("siren", "SIREN"),
           ("per-partition", "SIREN-per-partition"))
PAPER = {"bach": {"local-global": 45.18, "siren": 39.94, "per-partition": 39.26}}
COLORS = {"local-global": "C0", "per-partition": "C1", "siren": "C2"}


def store_for(clip: str) -> Path:
    store = ROOT / "storage" / "bench" / f"{clip}.zarr"
    subprocess.run([sys.executable, "-m", "distlg", "ingest", str(DATA / f"{clip}.wav"), str(store),
                    "--no-progress"], check=True, cwd=ROOT)
    return store


def run_one(store: Path, arch: str, steps: int, samples: int) -> dict:
    partitioned = arch != "siren"
    r = run_config(path=str(store), arch=arch, params=PARAMS, steps=steps, lr=LR, seed=0,
                   factors=[PARTITIONS if partitioned else 1],
                   samples_per_partition=samples if partitioned else samples * PARTITIONS,
                   eval_every=EVAL_EVERY, threads=1,
                   out=str(ROOT / "storage" / "bench" / "audio-run"))
    evals = [h for h in r.history if "psnr" in h]
    a, g = r.plan.arch, r.plan.grid
    return dict(arch=arch, psnr=r.final.psnr, mse=r.final.mse, best=max(h["psnr"] for h in evals),
                seconds=r.seconds, steps=r.steps_run, params=a.total_params(g.num_partitions),
                widths=f"{a.local_width or '–'} / {a.global_width or '–'}",
                samples=r.plan.samples_per_step, grid=g,
                curve=[(h["step"], h["time"], h["psnr"]) for h in evals],
                recon=r.final.reconstruction[:, 0])


def plot_curves(results: dict, name: str) -> str:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 2, figsize=(11, 3.6 * len(results)), squeeze=False)
    labels = dict(METHODS)
    for row, (clip, runs) in zip(axes, results.items()):
        for r in runs:
            steps, times, psnrs = zip(*r["curve"])
            row[0].plot(steps, psnrs, marker=".", color=COLORS[r["arch"]], label=labels[r["arch"]])
            row[1].plot(times, psnrs, marker=".", color=COLORS[r["arch"]], label=labels[r["arch"]])
        for arch, value in PAPER.get(clip, {}).items():
            row[0].axhline(value, color=COLORS[arch], ls=":", lw=1)
        row[0].set(xlabel="step", ylabel="PSNR (dB)", title=f"{clip}: PSNR vs step"
                   + (" (dotted: paper, full batch)" if clip in PAPER else ""))
        row[1].set(xlabel="training time (s, 1 thread)", ylabel="PSNR (dB)",
                   title=f"{clip}: PSNR vs training time")
        for ax in row:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=110)
    plt.close(fig)
    return f"{name}.png"


def plot_waveforms(results: dict, truths: dict, rates: dict, name: str) -> str:
    """Per clip: a 20 ms excerpt across the boundary of partitions 15 and 16 (truth and each
    reconstruction, then each error), and the PSNR of every partition's span."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = dict(METHODS)
    fig, axes = plt.subplots(len(results), 3, figsize=(16, 3.6 * len(results)), squeeze=False)
    for row, (clip, runs) in zip(axes, results.items()):
        truth, rate = truths[clip], rates[clip]
        grid = next(r["grid"] for r in runs if r["arch"] != "siren")
        boundary = grid.box(PARTITIONS // 2)[0][0]
        half = int(0.01 * rate)
        sl = slice(max(boundary - half, 0), min(boundary + half, len(truth)))
        t = (np.arange(sl.start, sl.stop) - boundary) / rate * 1000
        row[0].plot(t, truth[sl], color="k", lw=2.2, label="ground truth")
        for r in runs:
            row[0].plot(t, r["recon"][sl], color=COLORS[r["arch"]], lw=0.9, label=labels[r["arch"]])
            row[1].plot(t, r["recon"][sl] - truth[sl], color=COLORS[r["arch"]], lw=0.9,
                        label=labels[r["arch"]])
        for ax in row[:2]:
            ax.axvline(0, color="grey", ls=":", lw=1)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
        row[0].set(xlabel="ms from the boundary of partitions 15 | 16", ylabel="value",
                   title=f"{clip}: 20 ms excerpt")
        row[1].set(xlabel="ms from the boundary of partitions 15 | 16", ylabel="error",
                   title=f"{clip}: error (reconstruction − truth)")
        boxes = [grid.valid_box(pid)[0] for pid in range(grid.num_partitions)]
        for r in runs:
            err = np.square(r["recon"] - truth)
            per = [-10 * np.log10(max(err[a:b].mean(), 1e-12)) for a, b in boxes]
            row[2].plot(range(PARTITIONS), per, marker=".", color=COLORS[r["arch"]],
                        label=labels[r["arch"]])
        row[2].set(xlabel="partition (1/32 of the clip)", ylabel="PSNR (dB)",
                   title=f"{clip}: PSNR per partition")
        row[2].grid(alpha=0.3)
        row[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / f"{name}.png", dpi=100)
    plt.close(fig)
    return f"{name}.png"


def read(results: dict, quiet: dict, steps: int) -> str:
    """The 'Read:' paragraph: the ordering against the paper's, and why it differs."""
    parts = []
    for clip, runs in results.items():
        by = {r["arch"]: r for r in runs}
        lg, siren, pp = by["local-global"], by["siren"], by["per-partition"]
        ds, dp = lg["psnr"] - siren["psnr"], lg["psnr"] - pp["psnr"]
        if ds > 0 and dp > 0:
            parts.append(f"on {clip} Local-Global leads both baselines at {steps} steps, SIREN by "
                         f"{ds:.2f} dB and per-partition by {dp:.2f} dB")
        else:
            parts.append(f"on {clip} Local-Global does not lead both at {steps} steps: "
                         f"{ds:+.2f} dB against SIREN (best {lg['best'] - siren['best']:+.2f}), "
                         f"{dp:+.2f} dB against per-partition")
    text = "Read: " + "; ".join(parts) + ". "
    speed, equal_time = [], []
    for clip, runs in results.items():
        by = {r["arch"]: r for r in runs}
        lg, siren = by["local-global"], by["siren"]
        speed.append(siren["seconds"] / lg["seconds"])
        at_lg = [c for c in siren["curve"] if c[1] <= lg["seconds"]]
        if at_lg:
            equal_time.append(f"{lg['psnr'] - at_lg[-1][2]:+.1f} dB on {clip}")
    if "bach" in results:
        by = {r["arch"]: r for r in results["bach"]}
        text += (
            f"The paper's bach figures (45.18 / 39.94 / 39.26 dB, full batch) are far above these "
            f"({by['local-global']['psnr']:.2f} / {by['siren']['psnr']:.2f} / "
            f"{by['per-partition']['psnr']:.2f}) and its Local-Global lead over SIREN is 5.2 dB: "
            f"here every step sees {by['local-global']['samples']:,} samples (5 % of bach), so "
            f"{steps} steps are ~{steps * by['local-global']['samples'] / 308207:.0f} passes over "
            f"the clip instead of {steps} exact full-batch gradients, and all three stop far from "
            "converged (the curves are still rising). What the sampled setting keeps is the cost "
            f"side: Local-Global is {min(speed):.1f}-{max(speed):.1f}x cheaper per step than SIREN"
            + (", and at equal training time (SIREN's last evaluation inside Local-Global's "
               "training time) it leads SIREN by " + " and ".join(equal_time) if equal_time else "")
            + ". ")
    text += ("Differences of a few tenths of a dB are inside one seed's noise (the image benchmark "
             "measures a seed-to-seed spread of 0.2-0.5 dB). ")
    if "counting" in quiet:
        q = quiet["counting"]
        text += (
            "Counting (speech with pauses) splits by loudness: in the quietest partitions "
            f"per-partition is best ({q['per-partition'][0]:.0f} dB), Local-Global next "
            f"({q['local-global'][0]:.0f}) and SIREN last ({q['siren'][0]:.0f}), as a shared "
            "network leaks error into silence; the loud partitions, which dominate the MSE, "
            f"are within {max(v[1] for v in q.values()) - min(v[1] for v in q.values()):.1f} dB "
            "of each other, so the whole-clip PSNRs end close.")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="bach only, 30 steps")
    args = parser.parse_args()
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    clips, steps = (CLIPS[:1], 30) if args.quick else (CLIPS, STEPS)
    name = "audio_quick" if args.quick else "audio"
    RESULTS.mkdir(parents=True, exist_ok=True)

    from distlg.data.store import open_store

    results, truths, rates, lengths = {}, {}, {}, {}
    for clip in clips:
        store = store_for(clip)
        sig = open_store(str(store))
        truths[clip] = sig.normalise(sig.read(((0, sig.shape[0]), (0, 1))))[:, 0]
        rates[clip] = float(sig.info.sample_rate or 44100)
        lengths[clip] = sig.shape[0]
        results[clip] = []
        for arch, label in METHODS:
            r = run_one(store, arch, steps, SAMPLES_PER_PARTITION)
            results[clip].append(r)
            print(f"{clip} {label}: widths {r['widths']}, {r['params']:,} params, "
                  f"{r['samples']:,} samples/step, PSNR {r['psnr']:.2f} (best {r['best']:.2f}), "
                  f"{r['seconds']:.1f} s", flush=True)

    labels = dict(METHODS)
    lines = [f"{steps} steps, lr {LR:g}, {PARTITIONS * SAMPLES_PER_PARTITION:,} samples per step "
             f"for every method, seed 0, 1 thread; PSNR on the [-1, 1] values over the whole clip.",
             "", "| clip | method | widths (local / global) | params | samples/step | "
             f"PSNR {steps} steps | best PSNR (every {EVAL_EVERY}) | MSE | train s | s/step | "
             "paper (full batch, GPU) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for clip, runs in results.items():
        for r in runs:
            paper = PAPER.get(clip, {}).get(r["arch"])
            lines.append(
                f"| {clip} ({lengths[clip] / rates[clip]:.1f} s) | {labels[r['arch']]} | "
                f"{r['widths']} | {r['params']:,} | {r['samples']:,} | {r['psnr']:.2f} | "
                f"{r['best']:.2f} | {r['mse']:.2e} | {r['seconds']:.0f} | "
                f"{r['seconds'] / r['steps']:.3f} | {f'{paper:.2f}' if paper else '–'} |")
    lines.append("")
    for clip, runs in results.items():
        by = {r["arch"]: r for r in runs}
        lg, siren, pp = by["local-global"], by["siren"], by["per-partition"]
        at_lg = [c for c in siren["curve"] if c[1] <= lg["seconds"]]
        lines.append(
            f"- {clip}: Local-Global − SIREN {lg['psnr'] - siren['psnr']:+.2f} dB, Local-Global − "
            f"per-partition {lg['psnr'] - pp['psnr']:+.2f} dB at {steps} steps; Local-Global "
            f"trains {siren['seconds'] / lg['seconds']:.1f}x faster than SIREN per step"
            + (f"; in Local-Global's {lg['seconds']:.0f} s SIREN gets to step {at_lg[-1][0]} and "
               f"{at_lg[-1][2]:.2f} dB" if at_lg else "") + ".")
    quiet = {}
    for clip, runs in results.items():
        grid = next(r["grid"] for r in runs if r["arch"] != "siren")
        boxes = [grid.valid_box(pid)[0] for pid in range(grid.num_partitions)]
        energy = np.array([np.mean(np.square(truths[clip][a:b])) for a, b in boxes])
        order = np.argsort(energy)
        k = len(boxes) // 4
        stats = {}
        for r in runs:
            per = np.array([-10 * np.log10(max(np.mean(np.square(r["recon"][a:b] - truths[clip][a:b])),
                                               1e-12)) for a, b in boxes])
            stats[r["arch"]] = (per[order[:k]].mean(), per[order[-k:]].mean())
        quiet[clip] = stats
        lines.append(f"- {clip}, mean PSNR of the {k} quietest / {k} loudest partitions: " + "; ".join(
            f"{labels[a]} {q:.1f} / {ld:.1f} dB" for a, (q, ld) in stats.items()) + ".")
    lines += ["", read(results, quiet, steps)]
    curves = plot_curves(results, f"{name}_curves")
    waves = plot_waveforms(results, truths, rates, f"{name}_waveforms")
    total = time.perf_counter() - t_start
    lines += ["", f"![PSNR vs step and time]({curves})", "",
              f"![waveform and error excerpts]({waves})", "",
              f"Total run time of this script: {total / 60:.1f} min ({total:.0f} s, training and "
              "evaluation, 1 thread, on a machine shared with other jobs)."]
    for line in lines:
        print(line)
    write_results(name, "Audio (paper Table 11): Local-Global vs SIREN vs per-partition, C0 = 32",
                  lines, NOTES)


NOTES = """
Setting: see the script's docstring (equal ~198 K budgets, 15,360 samples per step for every
method instead of the paper's full batch). Paper, Table 11 (bach, full batch, 1000 steps):
Local-Global 45.18 dB (MSE 3e-5), SIREN 39.94, SIREN-per-partition 39.26.
"""


if __name__ == "__main__":
    main()
