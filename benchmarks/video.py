"""The paper's video setting (its Table 2) at reduced size: Local-Global SIREN vs its baselines.

    python benchmarks/video.py            # ~12 minutes on 1 thread; writes results/video.md + PNGs
    python benchmarks/video.py --quick    # a tiny smoke version (~1 minute), results/video-quick.md

The clip: ../shared/data/bikes.mp4, its first 60 frames, the centre 272x272 crop resized to
256x256 (Pillow bilinear), RGB 8-bit, as in ../shared/REFERENCE.md (60 x 256 x 256 x 3 =
11.8 M values). Partitions (5, 8, 8) = 320 of 12 x 32 x 32, halos (1, 2, 2) for the two
partitioned methods; a budget of 160,000 parameters (~74 values per parameter, the paper's
cat-video ratio) for every method. PSNR (on [0, 1]) and SSIM (mean over frames) over the whole
clip, every pixel evaluated by its own partition; training time excludes evaluation.

Protocol, the same for the three methods:
- the samples per step of each method's own code: 2 % of the pixels for the partitioned
  methods (245 per partition, from its halo-grown box), 0.38 % for SIREN (its default);
- each method's best constant Adam learning rate from short probes on this clip over
  {1e-4, 3e-4, 5e-4, 1e-3, 2e-3} (see the notes of results/video.md): 1e-3 for Local-Global and
  per-partition, 5e-4 for SIREN (the paper's 1e-4 is far too slow at this step count for all);
  Local-Global's replicated part (global branch, merge) at 0.3x its rate (``--global-lr``; a
  probe of 600 steps: 31.19 dB vs 30.33 at 1x);
- about the same training wall time for every method (their step counts are set from their
  measured costs per step), so both equal-step and equal-time comparisons can be read; the
  global share of Local-Global is 5 % (widths 11 / 48, near the paper's own 11 / 40 for this
  budget, which is ~4 %).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, run_config, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "storage" / "bench" / "video"
SOURCE = ROOT.parent / "shared" / "data" / "bikes.mp4"
METHODS = ("local-global", "per-partition", "siren")
LABELS = {"local-global": "Local-Global SIREN", "per-partition": "SIREN-per-partition",
          "siren": "SIREN"}
COLORS = {"local-global": "C0", "per-partition": "C1", "siren": "C2"}

FULL = dict(frames=60, size=256, factors=[5, 8, 8], overlaps=[1, 2, 2], params=160_000,
            shown_steps=[300, 600, 900],
            runs={"local-global": dict(steps=900, eval_every=150, sample_fraction=0.02, lr=1e-3,
                                       global_share=0.05, global_lr=0.3),
                  "per-partition": dict(steps=4200, eval_every=300, sample_fraction=0.02, lr=1e-3),
                  "siren": dict(steps=900, eval_every=150, sample_fraction=0.0038, lr=5e-4)})
QUICK = dict(frames=20, size=64, factors=[2, 4, 4], overlaps=[1, 2, 2], params=20_000,
             shown_steps=[20, 40],
             runs={"local-global": dict(steps=60, eval_every=20, sample_fraction=0.02, lr=1e-3,
                                        global_share=0.05, global_lr=0.3),
                   "per-partition": dict(steps=120, eval_every=40, sample_fraction=0.02, lr=1e-3),
                   "siren": dict(steps=60, eval_every=20, sample_fraction=0.0038, lr=5e-4)})


def load_clip(frames: int, size: int | None, source: Path = SOURCE) -> np.ndarray:
    """uint8 [frames, size, size, 3]: the first frames of ``source``, centre square crop,
    resized; with ``size`` None the whole frames."""
    import av
    from PIL import Image

    out = []
    with av.open(str(source)) as container:
        for frame in container.decode(container.streams.video[0]):
            if len(out) == frames:
                break
            a = frame.to_ndarray(format="rgb24")
            if size is None:
                out.append(a)
                continue
            h, w, _ = a.shape
            side = min(h, w)
            y0, x0 = (h - side) // 2, (w - side) // 2
            crop = Image.fromarray(np.ascontiguousarray(a[y0:y0 + side, x0:x0 + side]))
            out.append(np.asarray(crop.resize((size, size), Image.BILINEAR)))
    return np.stack(out)


def frame_psnr(truth: np.ndarray, recon: np.ndarray) -> float:
    """PSNR of one frame, both on [-1, 1], scored on [0, 1]."""
    mse = float(np.mean(np.square(recon - truth, dtype=np.float64)))
    return 10 * np.log10(4.0 / mse)


def at_time(history: list[dict], seconds: float) -> dict | None:
    """The last evaluation within ``seconds`` of training."""
    evals = [h for h in history if "psnr" in h and h["time"] <= seconds * 1.000001]
    return evals[-1] if evals else None


def draw(runs: dict, clip: np.ndarray, frame: int, prefix: str) -> tuple[Path, Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = RESULTS / f"{prefix}_psnr.png"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for m, r in runs.items():
        ev = [h for h in r.history if "psnr" in h]
        axes[0].plot([h["step"] for h in ev], [h["psnr"] for h in ev], "o-", ms=3, color=COLORS[m],
                     label=LABELS[m])
        axes[1].plot([h["time"] for h in ev], [h["psnr"] for h in ev], "o-", ms=3, color=COLORS[m],
                     label=LABELS[m])
    from matplotlib.ticker import FixedLocator, NullFormatter, ScalarFormatter

    axes[0].set_xlabel("step (log scale)")
    axes[0].set_xscale("log")
    axes[0].xaxis.set_major_locator(FixedLocator([10, 20, 50, 100, 200, 500, 1000, 2000, 5000]))
    axes[0].xaxis.set_major_formatter(ScalarFormatter())
    axes[0].xaxis.set_minor_formatter(NullFormatter())
    axes[1].set_xlabel("training time (s; evaluation excluded; 1 thread)")
    for ax in axes:
        ax.set_ylabel("PSNR (dB), whole clip")
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.tight_layout()
    fig.savefig(curves, dpi=90)
    plt.close(fig)

    frames = RESULTS / f"{prefix}_frame.png"
    truth = clip[frame].astype(np.float32) / 127.5 - 1
    panels = [("ground truth", truth)]
    for m, r in runs.items():
        rec = r.final.reconstruction[frame]
        panels.append((f"{LABELS[m]}\nframe {frame}: {frame_psnr(truth, rec):.2f} dB "
                       f"({r.steps_run} steps)", rec))
    h = clip.shape[1]
    zoom = (slice(h // 4, h // 2), slice(h // 4, h // 2))
    fig, axes = plt.subplots(2, len(panels), figsize=(3.2 * len(panels), 6.9))
    for j, (title, image) in enumerate(panels):
        image = np.clip((image + 1) / 2, 0, 1)
        axes[0, j].imshow(image)
        axes[0, j].set_title(title, fontsize=9)
        axes[1, j].imshow(image[zoom], interpolation="nearest")
        axes[1, j].set_title("zoom: rows/cols {}-{}".format(h // 4, h // 2), fontsize=8)
        for ax in axes[:, j]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(frames, dpi=90)
    plt.close(fig)
    return curves, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny smoke version (~1 minute)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    s = QUICK if args.quick else FULL
    name = "video-quick" if args.quick else "video"
    t_start = time.perf_counter()

    import torch

    from distlg.data.signal import Signal

    torch.set_num_threads(args.threads)
    clip = load_clip(s["frames"], s["size"])
    signal = Signal.from_array(clip, "video", fps=25.0, source="bikes.mp4")
    print(f"clip {clip.shape}", flush=True)

    runs = {}
    for m in METHODS:
        grid = (dict(factors=[1, 1, 1], overlaps=[0, 0, 0]) if m == "siren"
                else dict(factors=s["factors"], overlaps=s["overlaps"]))
        r = run_config(signal, arch=m, params=s["params"], threads=args.threads,
                       out=str(BENCH / f"{name}-{m}"), **grid, **s["runs"][m])
        runs[m] = r
        print(f"{m}: {r.steps_run} steps in {r.seconds:.0f} s ({1000 * r.seconds / r.steps_run:.0f} "
              f"ms/step), PSNR {r.final.psnr:.2f}, SSIM {r.final.ssim:.4f}", flush=True)

    equal = min(r.seconds for r in runs.values())
    shown = s["shown_steps"]
    lines = [f"Clip {s['frames']} x {s['size']} x {s['size']} RGB (bikes.mp4: first frames, centre "
             f"crop, resized); budget {s['params']:,} parameters; partitions {tuple(s['factors'])} "
             f"with halos {tuple(s['overlaps'])} for the partitioned methods; {args.threads} thread(s). "
             "PSNR of the whole clip on [0, 1]; SSIM mean over frames (final model only).", "",
             "| method | widths (local / global) | params | samples/step (fraction) | lr | "
             + " | ".join(f"PSNR {k}" for k in shown)
             + " | final: steps, PSNR, SSIM | train s | ms/step | µs/sample | "
             f"PSNR at {equal:.1f} s (step) |",
             "|---|---|---|---|---|" + "---|" * len(shown) + "---|---|---|---|---|"]
    for m, r in runs.items():
        a, cfg = r.plan.arch, s["runs"][m]
        at = {h["step"]: h["psnr"] for h in r.history if "psnr" in h}
        cells = " | ".join(f"{at[k]:.2f}" if k in at else "–" for k in shown)
        t = at_time(r.history, equal)
        eq = f"{t['psnr']:.2f} ({t['step']})" if t else "–"
        per_step = r.seconds / r.steps_run
        lines.append(
            f"| {LABELS[m]} | {a.local_width or '–'} / {a.global_width or '–'} | "
            f"{a.total_params(r.plan.grid.num_partitions):,} | {r.plan.samples_per_step:,} "
            f"({cfg['sample_fraction']:.2%}) | {cfg['lr']:g}{shared_lr(cfg)} | {cells} | {r.steps_run}, "
            f"{r.final.psnr:.2f}, {r.final.ssim:.4f} | {r.seconds:.0f} | {1000 * per_step:.0f} | "
            f"{1e6 * per_step / r.plan.samples_per_step:.2f} | {eq} |")
    curves, frames = draw(runs, clip, s["frames"] // 2, name)
    lines += ["", read(runs, equal, shown[-1]), "",
              f"![PSNR vs step and vs training time]({curves.name})", "",
              f"![frame {s['frames'] // 2}]({frames.name})"]
    total = time.perf_counter() - t_start
    for line in lines:
        print(line)
    print(f"total {total / 60:.1f} min")
    write_results(name, f"Video: bikes {s['frames']}x{s['size']}x{s['size']}, "
                  f"~{s['params'] // 1000} K parameters, partitions {tuple(s['factors'])}",
                  lines, f"Total run time of this command: {total / 60:.1f} minutes (training, "
                  "evaluations, plots).\n" + ("" if args.quick else NOTES))


def shared_lr(cfg: dict) -> str:
    return f" (global x{cfg['global_lr']:g})" if "global_lr" in cfg else ""


def read(runs: dict, equal: float, step: int) -> str:
    """The "Read:" paragraph: the orderings at equal steps and equal time, from this run."""
    lg, pp, sn = (runs[m] for m in METHODS)

    def psnr_at(r, k):
        return next((h["psnr"] for h in r.history if "psnr" in h and h["step"] == k), None)

    def order(values: dict) -> str:
        ranked = sorted(((v, m) for m, v in values.items() if v is not None), reverse=True)
        return " > ".join(f"{LABELS[m]} {v:.2f}" for v, m in ranked)

    steps = {m: psnr_at(r, step) for m, r in runs.items()}
    timed = {m: (at_time(r.history, equal) or {}).get("psnr") for m, r in runs.items()}
    us = {m: 1e6 * r.seconds / r.steps_run / r.plan.samples_per_step for m, r in runs.items()}
    out = [f"Read: at equal steps ({step}): {order(steps)} dB."]
    if steps["local-global"] is not None and steps["siren"] is not None:
        out.append(f"Local-Global vs SIREN: {steps['local-global'] - steps['siren']:+.2f} dB; "
                   f"vs per-partition: {steps['local-global'] - (steps['per-partition'] or 0):+.2f} dB.")
    out.append(f"At equal training time ({equal:.0f} s, the shortest of the three runs): "
               f"{order(timed)} dB.")
    out.append(f"Measured cost per training sample: SIREN {us['siren']:.2f} µs, Local-Global "
               f"{us['local-global']:.2f} µs ({us['siren'] / us['local-global']:.1f}x cheaper), "
               f"per-partition {us['per-partition']:.2f} µs ({us['siren'] / us['per-partition']:.0f}x "
               "cheaper).")
    return " ".join(out)


NOTES = """
Why Local-Global does not come out ahead here (the PSNR at each step is deterministic for a seed,
so these per-step numbers repeat from run to run; the timings do not):
- Against SIREN it leads at equal steps, as in the paper: +0.75 dB at 900 steps (the paper's
  full-size margin is +0.57 dB). At equal time the two are close (31.89 vs 31.16 dB here): with
  the paper's sample fractions one Local-Global step (78,720 samples) costs about as much as one
  SIREN step (14,942 samples), because Local-Global is only ~5x cheaper per sample on this CPU
  although it needs ~15x fewer multiply-adds. Local-Global's time advantage grows with the
  budget: at the paper's full-size widths (3.19 M weights) it processes 13x more samples per
  second than SIREN (results/speed.md), against ~5x at this 160 K budget.
- Against per-partition it trails, by 0.43 dB at 900 steps at the learning rate both prefer
  (1e-3); at the paper's 1e-4 the two were level in REFERENCE.md (30.36 vs 30.20 dB after 1500
  steps). Local-Global's shared part (global branch and merge) takes the gradients of all 320
  partitions and every one of its steps moves the whole clip; at the full 1e-3 it held
  Local-Global back: stepping it at 0.3x (`--global-lr 0.3`, used here) gave 31.19 vs 30.33 dB
  after 600 steps in a probe, and 31.94 vs 31.42 dB after 900 steps in this benchmark (the
  previous run of this command, at 1x). Per-partition is also 5x cheaper per sample (no global
  branch, no merge), so at equal time its lead grows to several dB.
- Both partitioned methods still show faint partition seams at these step counts (frame figure);
  Local-Global's global branch has not removed them by 900 steps.
- Settings tried and not found to reverse this (probes below): learning rate 1e-4 to 2e-3,
  global share 5 % and 10 %, 0.5 % and 2 % of the pixels per step, the shared part at 0.3x.
  At this reduced size and step budget on one CPU thread we found no fair setting in which
  Local-Global beats both baselines; it beats SIREN per step and slightly per second.

Why the learning rates differ from the paper's 1e-4: short probes on this clip (same budget,
1 thread; development runs, not part of this command) gave, for Local-Global at 2 % per step
(global share 10 %, widths 11 / 69) after 150 steps: lr 1e-4 13.53 dB, 3e-4 19.04, 1e-3 27.19,
2e-3 25.70 (global share 5 %, 11 / 48, lr 1e-3: 27.02, at ~2/3 of the cost per step); SIREN at
0.38 % after 300 steps: 1e-4 28.49, 5e-4 30.28, 1e-3 27.99; per-partition at 1e-3: 29.73 dB
after 300 steps (REFERENCE.md, at 1e-4: 21.19 after 500). With the paper's 1e-4, 320 small local
networks that each see 245 samples a step move far too slowly for a 1,000-step budget; SIREN
suffers much less. Local-Global at 0.5 % per step (lr 1e-3) was no better per second than at 2 %
(26.8 dB after 600 steps in 71 s vs 27.2 after 150 steps in 77 s), so the paper's 2 % is kept.

How to read the comparison:
- Equal steps is the paper's Table 2 comparison; the partitioned methods draw 5x more samples
  per step than SIREN there (the paper's choice for the two families, kept).
- Equal time is what the per-sample cost buys on this CPU. Local-Global needs ~15x fewer
  multiply-adds per sample than SIREN at this budget, but its layers are narrow (11 local,
  48 global, 59-wide merge): sines, elementwise work and small batched matmuls, not FLOPs, set
  its speed, so its measured advantage per sample is only a few-fold (see the µs/sample column).
  SIREN-per-partition, which drops the global branch and the merge, is the cheapest by far.
- Timings were taken on a shared 2-core machine with other jobs running; read them as rough
  and compare within this run only. Evaluations (off the clock) include the SIREN's full-clip
  renders of 3.9 M positions, the most expensive part of its run.
- PSNR at equal time is the last evaluation inside that time, so a method is credited only
  with what it had reached at its last evaluation (up to one evaluation interval late).
"""


if __name__ == "__main__":
    main()
