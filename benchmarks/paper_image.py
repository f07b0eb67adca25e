"""The paper's image setting on this machine: Local-Global SIREN vs its two baselines.

    python benchmarks/paper_image.py          # ~10 minutes (1 thread); writes results/paper_image.md

scikit-image's astronaut, RGB, resized to 256x256 (anti-aliased bilinear), values in [-1, 1];
a budget of 49,152 parameters (4 values per weight); (8, 8) partitions of 32x32 pixels;
full-batch Adam at lr 5e-4; PSNR on [0, 1] values over every pixel, best and final. SIREN runs
500 steps; Local-Global then gets the same training wall time (measured in this run), and its
PSNR at the last evaluation inside that time is reported. Evaluation is off the clock. One
thread, so that the comparison of times holds on a machine with another job on its other core.
"""

from __future__ import annotations

import sys
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


def main() -> None:
    runs = {}
    for arch in ("siren", "local-global", "per-partition"):
        runs[arch] = run_config(arch=arch, steps=STEPS[arch], eval_every=EVAL[arch],
                                out=str(SCRATCH / arch), **BASE)
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
    from distlg.render import render
    from distlg.signal import open_signal

    truth = open_signal(BASE["path"])
    images = {"ground truth": truth.normalise(truth.read(tuple((0, d) for d in truth.shape)))}
    images |= {f"{arch}, {r.steps_run} steps\n{r.final.psnr:.2f} dB": render(r.model_dir)
               for arch, r in runs.items()}
    curves = plot_training(runs, "paper_image", "astronaut 256x256, ~49 K parameters")
    lines += ["", f"![PSNR against step and time]({curves})",
              "", f"![Reconstructions]({plot_images(images, 'paper_image_reconstructions')})"]
    for line in lines:
        print(line)
    write_results("paper_image", "Image: astronaut 256x256, ~49 K parameters, (8, 8) partitions",
                  lines, "Reference (the paper's code on this machine, ../shared/REFERENCE.md): "
                  "Local-Global 32.59 / 38.51 dB at 500 / 2000 steps, SIREN-per-partition 31.01 / "
                  "36.81, SIREN 34.05 at 500.")


if __name__ == "__main__":
    main()
