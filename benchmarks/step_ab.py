"""The fused training step now against the same step at an older git revision: an A/B on one
batch, the two alternating (which goes first alternates too), minimum and median per step.

    python benchmarks/step_ab.py 0e1c922            # 1 thread, 40 pairs; prints, writes nothing
    python benchmarks/step_ab.py 0e1c922 --threads 2 --pairs 20

The paper's video widths (320 partitions x 200 samples, 55 local / 180 global) as
``benchmarks/speed.py`` builds them: distlg's recipe (lattice) and the paper's architecture
(concat merge; a fifth of the pairs, its steps are ~5x longer). Each step is timed in CPU
time of this process (``time.process_time``: what the step computes, not how long other jobs
on a shared machine kept it waiting) and in wall time; minimum and median of each.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import old_model_modules  # noqa: E402
from speed import HG, HL, LAYERS, D, O, P, lattice_arch  # noqa: E402

from distlg.nn import fused  # noqa: E402
from distlg.nn.model import INR, Architecture  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("rev", help="git revision to time against")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--pairs", type=int, default=40, help="alternating pairs (recipe)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model_old, fused_old = old_model_modules(args.rev)
    torch.manual_seed(0)
    x, y = torch.rand(P, 200, D) * 2 - 1, torch.rand(P, 200, O) * 2 - 1
    archs = {"recipe": lattice_arch(200), "paper": Architecture("local-global", D, O, LAYERS, HL, HG)}
    for label, arch in archs.items():
        old_arch = model_old.Architecture.from_dict(arch.to_dict())
        runs = {"now": (INR(arch, range(P)), fused.forward_backward),
                "then": (model_old.INR(old_arch, range(P)), fused_old.forward_backward)}
        times: dict[str, list[float]] = {k: [] for k in runs}
        cpu: dict[str, list[float]] = {k: [] for k in runs}
        for model, step in runs.values():
            step(model, x, y, 1e-3)  # warm-up
        pairs = args.pairs if label == "recipe" else max(3, args.pairs // 5)
        for r in range(pairs):
            for k in ("now", "then") if r % 2 else ("then", "now"):
                model, step = runs[k]
                t0, c0 = time.perf_counter(), time.process_time()
                step(model, x, y, 1e-3)
                times[k].append(time.perf_counter() - t0)
                cpu[k].append(time.process_time() - c0)
        for clock, table in (("cpu", cpu), ("wall", times)):
            for k, ts in table.items():
                print(f"{label} {clock} {k}: min {1e3 * min(ts):.1f} ms, median "
                      f"{1e3 * statistics.median(ts):.1f} ms ({len(ts)} steps)")
            print(f"{label} {clock} now / then: min {min(table['now']) / min(table['then']):.3f}, "
                  f"median {statistics.median(table['now']) / statistics.median(table['then']):.3f}",
                  flush=True)


if __name__ == "__main__":
    main()
