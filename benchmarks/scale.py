"""Training cost per sample against signal size: Local-Global (distlg recipe and the paper's),
SIREN-per-partition and SIREN, with the widths ``distlg train`` picks at a fixed compression.

    python benchmarks/scale.py                 # a few minutes; results/scale.md + .png
    python benchmarks/scale.py --sizes 3       # quicker
    python benchmarks/scale.py --against REV   # also each method's step at git REV

Video-shaped signals (RGB) from 1.5 x 10^5 to 4.1 x 10^8 values, the default
video partitioning (50x32x32 samples), 64 values per weight, 32 samples per partition per step
(the issue's measurement; at least 16,384 samples per step on the smallest signals, so that a
step's fixed costs do not dominate). No data is read: the batch is drawn from the partitions' sampling
boxes and the values are random, since the cost of a step does not depend on them. Each
method's fused forward + backward (``distlg.nn.fused.forward_backward``) is timed in this process
(CPU time unless --clock wall: the machine is shared), methods interleaved over rounds; the
median is reported as microseconds per training sample.
SIREN runs on a fixed 4,096-sample batch (its cost per sample does not depend on the batch).
``--against REV`` also times every method's fused step as it was at git revision REV (that
revision's package imported beside today's, the same architecture and batches), in the same
rounds, and reports today's time against it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, _pyplot, old_model_modules, write_results  # noqa: E402

from distlg.config import Config  # noqa: E402
from distlg.data.draws import random_positions  # noqa: E402
from distlg.data.signal import Signal  # noqa: E402
from distlg.nn import fused  # noqa: E402
from distlg.nn.model import INR  # noqa: E402
from distlg.training.plan import make_plan  # noqa: E402

SIZES = [(50, 32, 32), (50, 96, 128), (100, 192, 256), (150, 384, 640), (150, 720, 1280)]
"""Frames x rows x columns; x 3 channels: 1.5e5, 1.8e6, 1.5e7, 1.1e8, 4.1e8 values. Every axis is
a multiple of the default video partition (50x32x32), so at a fixed compression every size has
the same partition volume and the same widths: what changes is only the number of partitions.
(Sizes that cut the time axis unevenly, e.g. 64 frames into one 64-frame partition, change the
values per partition by up to 7x and with them every method's widths and cost per sample.)"""
METHODS = {
    "Local-Global (distlg)": dict(arch="local-global"),
    "Local-Global (paper)": dict(arch="local-global", recipe="paper"),
    "SIREN-per-partition": dict(arch="per-partition"),
    "SIREN": dict(arch="siren"),
}
SAMPLES = 32
MIN_STEP_SAMPLES = 16384
SIREN_BATCH = 4096


def fake_video(shape: tuple[int, int, int]) -> Signal:
    """A signal of ``shape`` x 3 whose data takes no memory (only its geometry is used)."""
    return Signal(np.broadcast_to(np.zeros((1, 1, 1, 1), np.uint8), shape + (3,)), "video", (0, 255))


def setup(signal: Signal, settings: dict, batches: int):
    """The plan, a model and ``batches`` batches (coordinates, values) drawn as the sampler
    draws them, each step its own positions (a sampled run recomputes everything that depends
    on them, e.g. the lattice's interpolation weights, every step)."""
    partitions = make_plan(Config().replace(**METHODS["SIREN-per-partition"]), signal).grid.num_partitions
    n = max(SAMPLES, -(-MIN_STEP_SAMPLES // partitions))
    plan = make_plan(Config().replace(samples_per_partition=n, **settings), signal)
    pids = list(range(plan.grid.num_partitions))
    model = INR(plan.arch, pids)
    n = n if plan.arch.has_local else SIREN_BATCH
    out = []
    for step in range(batches):
        pos = random_positions(plan.grid, pids, n, seed=0, step=step)
        coords = torch.from_numpy(plan.grid.normalise(pos))
        out.append((coords, torch.rand(coords.shape[:-1] + (3,)) * 2 - 1))
    return plan, model, out


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
"""How a step is timed: CPU time of this process (the default: what the step computes, not
how long other jobs on a shared machine kept it waiting; with one thread, what the step takes
on a core of its own), or wall time."""
CLOCK = CLOCKS["cpu"]


def time_step(model, coords, values, step=fused.forward_backward) -> float:
    t0 = CLOCK()
    step(model, coords, values, 1.0 / values.numel())
    return CLOCK() - t0


def old_run(rev: str, plan, model):
    """``model`` as the package at ``rev`` builds it (same architecture, same weights), and
    that revision's fused step."""
    model_old, fused_old = old_model_modules(rev)
    old = model_old.INR(model_old.Architecture.from_dict(plan.arch.to_dict()), model.partition_ids)
    old.load_state_dict(model.state_dict())
    return old, fused_old.forward_backward


def measure(shape, rounds: int, against: str | None = None) -> dict[str, dict]:
    signal = fake_video(shape)
    runs = {name: setup(signal, s, rounds + 1) for name, s in METHODS.items()}
    steps = {(name, "now"): (model, fused.forward_backward) for name, (_, model, _) in runs.items()}
    if against:
        steps |= {(name, "then"): old_run(against, plan, model)
                  for name, (plan, model, _) in runs.items()}
    times: dict[tuple, list[float]] = {key: [] for key in steps}
    for (name, _), (model, step) in steps.items():
        time_step(model, *runs[name][2][0], step)  # warm-up
    for r in range(rounds):
        for (name, when), (model, step) in steps.items():
            coords, values = runs[name][2][r + 1]
            samples = coords.shape[0] * coords.shape[1]
            times[name, when].append(time_step(model, coords, values, step) / samples * 1e6)
    out = {}
    for name, (plan, *_rest) in runs.items():
        a = plan.arch
        out[name] = dict(us=statistics.median(times[name, "now"]), local=a.local_width,
                         glob=a.global_width, params=a.total_params(plan.grid.num_partitions),
                         partitions=plan.grid.num_partitions, lattice=a.lattice)
        if against:
            out[name]["then"] = statistics.median(times[name, "then"])
    return out


def plot(table: dict, values: list[int]) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name in METHODS:
        ax.loglog(values, [table[v][name]["us"] for v in values], "o-", label=name)
    ax.set(xlabel="signal values", ylabel="training cost (µs per sample)",
           title="Cost per training sample vs signal size (64 values / weight)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "scale.png", dpi=110)
    plt.close(fig)
    return "scale.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1; with more, CPU time sums every thread's)")
    parser.add_argument("--sizes", type=int, default=len(SIZES), help="how many of the sizes to run")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per method (median)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="time steps in this process's CPU time (default) or in wall time")
    parser.add_argument("--against", metavar="REV", default=None,
                        help="also time each method's fused step as it was at this git revision")
    args = parser.parse_args()
    global CLOCK
    CLOCK = CLOCKS[args.clock]
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    table, values = {}, []
    for shape in SIZES[:args.sizes]:
        v = int(np.prod(shape)) * 3
        values.append(v)
        table[v] = measure(shape, args.rounds, args.against)
        row = ", ".join(f"{k}: {r['us']:.2f}" for k, r in table[v].items())
        print(f"{shape} ({v:.2e} values): {row} µs/sample", flush=True)
    then = f" | µs / sample at {args.against} | now / then" if args.against else ""
    lines = ["| values | partitions | method | widths local / global | lattice | weights | µs / sample | "
             f"vs per-partition{then} |", "|---|---|---|---|---|---|---|---|" + "---|---|" * bool(then)]
    for v in values:
        pp = table[v]["SIREN-per-partition"]["us"]
        for name, r in table[v].items():
            lines.append(f"| {v:.2e} | {r['partitions']:,} | {name} | {r['local'] or '-'} / "
                         f"{r['glob'] or '-'} | {'x'.join(map(str, r['lattice'])) or '-'} | "
                         f"{r['params']:,} | {r['us']:.2f} | {r['us'] / pp:.2f}x |"
                         + (f" {r['then']:.2f} | {r['us'] / r['then']:.3f} |" if then else ""))
    lg = [table[v]["Local-Global (distlg)"]["us"] for v in values]
    ratios = [table[v]["Local-Global (distlg)"]["us"] / table[v]["SIREN-per-partition"]["us"] for v in values]
    notes = (f"Local-Global (distlg) cost per sample: {min(lg):.2f}-{max(lg):.2f} µs "
             f"(spread {max(lg) / min(lg) - 1:.0%} across sizes); vs per-partition at equal "
             f"weights {min(ratios):.2f}x-{max(ratios):.2f}x.\n\n"
             f"![cost per sample]({plot(table, values)})\n\n"
             f"{args.threads} thread(s), {args.clock} time; run time "
             f"{(time.perf_counter() - started) / 60:.1f} minutes.")
    if args.against:
        now_then = [r["us"] / r["then"] for v in values for r in table[v].values()]
        notes += (f"\n\nAgainst {args.against} (its fused step, the same architectures and batches, "
                  f"in the same rounds): now / then {min(now_then):.3f}-{max(now_then):.3f}, "
                  f"geometric mean {statistics.geometric_mean(now_then):.3f}.")
    write_results("scale", "Cost per training sample against signal size", lines, notes)


if __name__ == "__main__":
    main()
