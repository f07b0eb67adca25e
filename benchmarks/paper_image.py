"""The paper's image setting on this machine: Local-Global SIREN vs its two baselines.

    python benchmarks/paper_image.py                   # ~20 minutes (1 thread); results/paper_image.md
    python benchmarks/paper_image.py --global-lr 1     # the replicated part at the full rate
    python benchmarks/paper_image.py --seeds 0         # seed 0 only (~8 minutes)
    python benchmarks/paper_image.py --recipe paper    # Local-Global as the paper builds it

scikit-image's astronaut, RGB, resized to 256x256 (anti-aliased bilinear), values in [-1, 1];
a budget of 49,152 parameters (4 values per weight); (8, 8) partitions of 32x32 pixels;
full-batch Adam at lr 5e-4 (constant); distlg's defaults otherwise (for images, the global branch
and merge of Local-Global step at 0.3x the rate: ``--global-lr``); PSNR on [0, 1] values over
every pixel, best and final. SIREN runs 500 steps; Local-Global then gets the same training wall
time (measured in this run), and its PSNR at the last evaluation inside that time is reported.
Local-Global and per-partition are repeated over further seeds (the final PSNR of one run moves
by ~0.5 dB with the seed). Evaluation is off the clock. One thread, so that the comparison of
times holds on a machine with another job on its other core.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import plot_images, plot_training, run_config, write_results  # noqa: E402

BASE = dict(path="builtin:astronaut@256x256", factors=[8, 8], params=49_152, lr=5e-4, threads=1)
STEPS = {"local-global": 2000, "per-partition": 2000, "siren": 500}
EVAL = {"local-global": 50, "per-partition": 50, "siren": 50}
SCRATCH = Path(__file__).resolve().parents[1] / "storage" / "bench" / "paper_image"


def psnr_at(history: list[dict], step: int) -> tuple[float, float]:
    """(final, best) PSNR at ``step`` from a run's evaluations."""
    evals = [r for r in history if "psnr" in r and r["step"] <= step]
    return evals[-1]["psnr"], max(r["psnr"] for r in evals)


RECIPE = "distlg"
"""Local-Global's recipe (``--recipe``): distlg's default, or the paper's formulation."""


def settings(arch: str, global_lr: float | None) -> dict:
    extra = {"global_lr": global_lr} if global_lr is not None and arch == "local-global" else {}
    if arch == "local-global":
        extra["recipe"] = RECIPE
    return dict(arch=arch, steps=STEPS[arch], eval_every=EVAL[arch], **BASE, **extra)


def seed_table(first: dict, seeds: list[int], global_lr: float | None) -> list[str]:
    """Final (best) PSNR at 500 and 2000 steps of Local-Global and per-partition per seed."""
    table = {arch: {seeds[0]: first[arch]} for arch in ("local-global", "per-partition")}
    for seed in seeds[1:]:
        for arch in table:
            r = run_config(seed=seed, out=str(SCRATCH / f"{arch}-seed{seed}"),
                           **settings(arch, global_lr))
            table[arch][seed] = r
            print(f"{arch} seed {seed}: final PSNR {r.final.psnr:.2f}", flush=True)
    lines = ["| seed | Local-Global 500 | per-partition 500 | Local-Global 2000 (best) | "
             "per-partition 2000 (best) | gap at 2000 |", "|---|---|---|---|---|---|"]
    gaps, finals = [], {arch: [] for arch in table}
    for seed in seeds:
        lg, pp = (psnr_at(table[a][seed].history, 2000) for a in table)
        lg5, pp5 = (psnr_at(table[a][seed].history, 500)[0] for a in table)
        gaps.append(lg[0] - pp[0])
        finals["local-global"].append(lg[0])
        finals["per-partition"].append(pp[0])
        lines.append(f"| {seed} | {lg5:.2f} | {pp5:.2f} | {lg[0]:.2f} ({lg[1]:.2f}) | "
                     f"{pp[0]:.2f} ({pp[1]:.2f}) | {gaps[-1]:+.2f} dB |")
    if len(seeds) > 1:
        mean = {a: (statistics.fmean(v), statistics.stdev(v)) for a, v in finals.items()}
        lines.append(f"| mean ± sd | | | {mean['local-global'][0]:.2f} ± {mean['local-global'][1]:.2f}"
                     f" | {mean['per-partition'][0]:.2f} ± {mean['per-partition'][1]:.2f} | "
                     f"{statistics.fmean(gaps):+.2f} dB (smallest {min(gaps):+.2f}) |")
    return ["", f"Seeds {', '.join(map(str, seeds))} (final PSNR, best in brackets):", ""] + lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="seeds of Local-Global and per-partition; the first also runs SIREN")
    parser.add_argument("--global-lr", type=float, default=None,
                        help="Local-Global's --global-lr (default: distlg's default for images)")
    parser.add_argument("--recipe", choices=("distlg", "paper"), default="distlg",
                        help="Local-Global's recipe: distlg's (global branch on a lattice) or the "
                             "paper's formulation (reproduces the results before the lattice)")
    args = parser.parse_args()
    global RECIPE
    RECIPE = args.recipe
    t_start = time.perf_counter()
    runs = {}
    for arch in ("siren", "local-global", "per-partition"):
        runs[arch] = run_config(seed=args.seeds[0], out=str(SCRATCH / arch),
                                **settings(arch, args.global_lr))
        r = runs[arch]
        print(f"{arch}: {r.steps_run} steps in {r.seconds:.1f} s, final PSNR {r.final.psnr:.2f}",
              flush=True)
    siren_time = runs["siren"].seconds
    lines = ["| method | widths (local / global) | params | PSNR 500 (best) | PSNR 2000 (best) | "
             "s/step |", "|---|---|---|---|---|---|"]
    for arch, r in runs.items():
        a = r.plan.arch
        cells = []
        for step in (500, 2000):
            if step <= r.steps_run:
                final, best = psnr_at(r.history, step)
                cells.append(f"{final:.2f} ({best:.2f})")
            else:
                cells.append("–")
        lines.append(f"| {arch} | {a.local_width or '–'} / {a.global_width or '–'} | "
                     f"{a.total_params(r.plan.grid.num_partitions):,} | {cells[0]} | {cells[1]} | "
                     f"{r.seconds / r.steps_run:.4f} |")
    lr_note = (f"Local-Global's replicated part at {runs['local-global'].plan.global_lr:g}x the "
               f"learning rate (`--global-lr`); seed {args.seeds[0]}.")
    lines = [lr_note, ""] + lines
    lg = [h for h in runs["local-global"].history if "psnr" in h and h["time"] <= siren_time]
    at_time = lg[-1]
    siren500 = psnr_at(runs["siren"].history, 500)[0]
    lines += ["", f"Equal training time ({siren_time:.0f} s, SIREN's 500 steps): Local-Global reaches "
              f"{at_time['psnr']:.2f} dB at step {at_time['step']} vs SIREN {siren500:.2f} dB "
              f"({at_time['psnr'] - siren500:+.2f} dB)."]
    lines += ["", "Training time to reach a PSNR (first evaluation at or above it; evaluations every "
              "50 steps, off the clock):", "", "| target | " + " | ".join(runs) + " |",
              "|---|" + "---|" * len(runs)]
    for target in (28.0, 30.0, 32.0, 34.0, 36.0):
        cells = []
        for r in runs.values():
            hit = next((h for h in r.history if h.get("psnr", 0) >= target), None)
            cells.append(f"{hit['time']:.0f} s (step {hit['step']})" if hit else "not reached")
        lines.append(f"| {target:.0f} dB | " + " | ".join(cells) + " |")
    lines += seed_table(runs, args.seeds, args.global_lr)
    from distlg.data.store import open_signal
    from distlg.rendering.render import render

    truth = open_signal(BASE["path"])
    images = {"ground truth": truth.normalise(truth.read(tuple((0, d) for d in truth.shape)))}
    images |= {f"{arch}, {r.steps_run} steps\n{r.final.psnr:.2f} dB": render(r.model_dir)
               for arch, r in runs.items()}
    curves = plot_training(runs, "paper_image", "astronaut 256x256, ~49 K parameters")
    lines += ["", f"![PSNR against step and time]({curves})",
              "", f"![Reconstructions]({plot_images(images, 'paper_image_reconstructions')})"]
    minutes = (time.perf_counter() - t_start) / 60
    lines += ["", f"Run time: {minutes:.1f} minutes (training, evaluations, plots; 1 thread)."]
    for line in lines:
        print(line)
    write_results("paper_image", "Image: astronaut 256x256, ~49 K parameters, (8, 8) partitions",
                  lines, "Reference (the paper's code on this machine, ../shared/REFERENCE.md): "
                  "Local-Global 32.59 / 38.51 dB at 500 / 2000 steps, SIREN-per-partition 31.01 / "
                  "36.81, SIREN 34.05 at 500.\n\n" + NOTES)


NOTES = """
Why `--global-lr 0.3` (development runs of this setting, 2000 steps, final PSNR; 1.0 is the
paper's single learning rate, and `--global-lr 1` reproduces its row):

| global lr | seed 0 | seed 1 | seed 2 | mean |
|---|---|---|---|---|
| 1.0 | 38.67 | 39.58 | 38.40 | 38.88 |
| 0.3 | 39.74 | 40.32 | 39.34 | 39.80 |
| 0.2 | 39.57 | – | 39.20 | – |
| 0.1 | 39.52 | 39.97 | 39.76 | 39.75 |

At 1.0 the PSNR swings by ~0.5 dB from one evaluation to the next after ~1000 steps (seed 0:
39.24 at step 1850, 38.69 at 1950); per-partition, which has no shared weights, climbs smoothly.
A cosine schedule (to 0.1x) also calms Local-Global (39.24 / 39.36 / 39.14 on seeds 0-2) but
slows per-partition (36.88 / 37.17 on seeds 0-1), so the constant rate is kept for all methods.

Not adopted, for a later study: SIREN's first-layer initialisation draws frequencies for the
whole signal, so a local sub-network sees about one period across its 32-pixel box. Drawing the
local first layer 4x wider lifted per-partition to 41.21 dB and Local-Global (at 0.3x) to 40.29
at 2000 steps (seed 0); 8x wider fell to 34.93 (per-partition). Both methods here keep SIREN's
initialisation, as the paper's code does.
"""


if __name__ == "__main__":
    main()
