"""Streaming a volume four times the memory budget: ingest, sampler rates in both modes, training.

    python benchmarks/stream_volume.py              # 1632^3 uint8 (4.05 GiB), 1 GiB budget; ~15 min
    python benchmarks/stream_volume.py --size 408 --budget-mib 16 --steps 60   # the same, 64x smaller

1. Generates the volume procedurally, a slab at a time, into storage/bench/volume.npy, and
   ingests it with `distlg ingest --partition-size N/8` (chunks aligned with the (8, 8, 8) grid);
   the .npy is deleted afterwards (the store is kept for reruns; --clean deletes it too).
2. Sampler rates, each in a fresh process with the budget: resident, on a shard of 64 of the 512
   partitions (what fits), and streaming, on all 512 (4x over budget) for 2.5 windows, counting
   the reading.
3. Trains on all 512 partitions in a fresh process with the budget: the loop of
   ``distlg.training.trainer`` (sampler batch, fused forward/backward, Adam), without its final full-signal
   evaluation, which would render all 4.3 G voxels. Prints the trainer's consumption rate, how long
   it waited for the sampler (the first window's fill, like resident mode's initial read, apart
   from the waits while training), and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "storage" / "bench"
SAMPLES = 200
"""Samples per partition per step (102,400 per step over 512 partitions)."""
PARAMS = 1_000_000
GIB = 1 << 30


def generate(path: Path, size: int, slab: int = 16) -> None:
    """A smooth multi-scale uint8 volume with fine noise, written slab by slab into a .npy."""
    axis = np.arange(size, dtype=np.float32)
    sx, cy = np.sin(0.021 * axis), np.cos(0.013 * axis)
    fine_x, fine_y = np.sin(0.19 * axis), np.cos(0.23 * axis)
    rng = np.random.default_rng(0)
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (size, size, size)})
        for z0 in range(0, size, slab):
            z = axis[z0:z0 + slab, None, None]
            v = (128 + 55 * np.cos(0.017 * z) * sx[None, None, :] * cy[None, :, None]
                 + 30 * np.sin(0.05 * z + 0.03 * axis[None, :, None]) * fine_x[None, None, :]
                 + 15 * fine_y[None, :, None] * np.cos(0.11 * z))
            v += rng.integers(0, 8, v.shape, dtype=np.uint8)
            fh.write(np.clip(v, 0, 255).astype(np.uint8).tobytes())


def ingest(size: int, store: Path) -> dict:
    source = BENCH / "volume.npy"
    t0 = time.perf_counter()
    generate(source, size)
    generated = time.perf_counter() - t0
    cmd = [sys.executable, "-m", "distlg", "ingest", str(source), str(store),
           "--partition-size", str(size // 8), "--no-progress", "--overwrite"]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip()
    seconds = time.perf_counter() - t0
    source.unlink()
    print(out)
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"generate_s": generated, "ingest_s": seconds, "ingest_line": out, "ingest_rss_mib": rss}


# -- phases, each run in a fresh process -------------------------------------------------------------
def open_plan(store: Path):
    from distlg.config import Config
    from distlg.data.store import open_signal
    from distlg.training.plan import make_plan

    signal = open_signal(str(store))
    config = Config().replace(factors=[8, 8, 8], params=PARAMS, samples_per_partition=SAMPLES)
    return signal, make_plan(config, signal)


def sampler_rate(store: Path, pids_kind: str, steps: int, budget: int) -> dict:
    from distlg.data.sampler import make_sampler
    from distlg.geometry import shard

    signal, plan = open_plan(store)
    pids = shard(plan.grid, 8)[0] if pids_kind == "shard" else list(range(plan.grid.num_partitions))
    t0 = time.perf_counter()
    sampler = make_sampler(signal, plan.grid, pids, SAMPLES, 0, budget)
    sampler.batch(0)  # the initial read (resident) or the first window's fill (streaming)
    fill = time.perf_counter() - t0
    steps = steps or math.ceil(2.5 * sampler.window)
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        sampler.batch(step)
    seconds = time.perf_counter() - t0
    sampler.close()
    return {"mode": sampler.mode, "describe": sampler.describe(), "partitions": len(pids),
            "fill_s": fill, "steps": steps, "samples_per_s": steps * len(pids) * SAMPLES / seconds,
            "stats": getattr(sampler, "stats", None)}


def train_phase(store: Path, steps: int, budget: int) -> dict:
    import torch

    from distlg.data.sampler import make_sampler
    from distlg.nn import fused
    from distlg.nn.model import INR

    torch.set_num_threads(2)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    signal, plan = open_plan(store)
    pids = list(range(plan.grid.num_partitions))
    model = INR(plan.arch, pids, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=plan.lr)
    scale = 1.0 / (plan.samples_per_step * signal.channels)
    sampler = make_sampler(signal, plan.grid, pids, SAMPLES, 0, budget)
    t0 = time.perf_counter()
    sampler.batch(0)
    fill = time.perf_counter() - t0
    losses, t0 = [], time.perf_counter()
    for step in range(steps):
        batch = sampler.batch(step)
        losses.append(float(fused.forward_backward(model, batch.coords, batch.values, scale)) * scale)
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
    seconds = time.perf_counter() - t0
    sampler.close()
    stats = sampler.stats
    return {"mode": sampler.mode, "describe": sampler.describe(), "steps": steps, "seconds": seconds,
            "fill_s": fill, "wait_s": stats["wait_s"], "wait_fraction": stats["wait_s"] / seconds,
            "gather_s": stats["gather_s"], "windows": stats["windows"],
            "samples_per_s": steps * plan.samples_per_step / seconds,
            "params": plan.arch.total_params(plan.grid.num_partitions),
            "widths": [plan.arch.local_width, plan.arch.global_width],
            "loss_first_last": [float(np.mean(losses[:10])), float(np.mean(losses[-10:]))],
            "base_rss_mib": base_rss,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_phase(*args: str) -> dict:
    """Run a phase of this script in a fresh process; its last output line is JSON."""
    out = subprocess.run([sys.executable, __file__, "--phase", *args], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


# -- report --------------------------------------------------------------------------------------------
def report(size: int, budget: int, store: Path, prep: dict, resident: dict, streaming: dict,
           trained: dict) -> None:
    raw = size ** 3
    stored = sum(p.stat().st_size for p in store.rglob("*") if p.is_file())
    rss_limit = (budget + GIB // 2) / 2**20
    t = trained
    verdict_wait = "OK" if t["wait_fraction"] <= 0.10 else "OVER"
    verdict_rss = "OK" if t["peak_rss_mib"] < rss_limit else "OVER"
    ingest_line = prep.get("ingest_line", "(store kept from an earlier run)")
    lines = [
        f"Volume {size}^3 uint8 = {raw / GIB:.2f} GiB, generated in {prep.get('generate_s', 0):.0f} s; "
        f"memory budget {budget / GIB:.3g} GiB; grid (8, 8, 8) = 512 partitions of {size // 8}^3; "
        f"{SAMPLES} samples per partition per step ({512 * SAMPLES:,} per step).",
        "",
        f"- ingest: {prep.get('ingest_s', 0):.0f} s, peak RSS {prep.get('ingest_rss_mib', 0):,.0f} MiB; "
        f"store {stored / GIB:.2f} GiB ({raw / stored:.2f}x): `{ingest_line}`",
        "",
        "| what | partitions | mode | samples/s | first batch (initial read / fill) |",
        "|---|---|---|---|---|",
        f"| sampler alone | {resident['partitions']} (fits) | {resident['mode']} | "
        f"{resident['samples_per_s']:,.0f} | {resident['fill_s']:.1f} s |",
        f"| sampler alone, reading included | {streaming['partitions']} | {streaming['mode']} | "
        f"{streaming['samples_per_s']:,.0f} | {streaming['fill_s']:.1f} s |",
        f"| trainer (consumes) | 512 | {t['mode']} | {t['samples_per_s']:,.0f} | {t['fill_s']:.1f} s |",
        "",
        f"- trainer: {t['steps']} steps in {t['seconds']:.0f} s, {t['params']:,} parameters (widths "
        f"{t['widths'][0]} local / {t['widths'][1]} global), loss {t['loss_first_last'][0]:.4f} -> "
        f"{t['loss_first_last'][1]:.4f}",
        f"- sampler: {t['describe']}; {t['windows']} windows gathered in {t['gather_s']:.0f} s of a "
        "background thread",
        f"- trainer waited for the sampler {t['wait_s']:.1f} s = {100 * t['wait_fraction']:.1f} % of "
        f"training time (the first window's fill, {t['fill_s']:.0f} s before step 0, apart) -> "
        f"{verdict_wait} (limit 10 %)",
        f"- peak RSS of the training process: {t['peak_rss_mib']:,.0f} MiB (after imports: "
        f"{t['base_rss_mib']:,.0f} MiB) -> {verdict_rss} (limit: the budget + 0.5 GiB = "
        f"{rss_limit:,.0f} MiB)",
    ]
    print("\n".join(lines))
    write_results("stream_volume", "Streaming a volume four times the memory budget", lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1632, help="volume edge (a multiple of 8)")
    parser.add_argument("--steps", type=int, default=500, help="training steps")
    parser.add_argument("--budget-mib", type=int, default=1024, help="memory budget of each phase")
    parser.add_argument("--clean", action="store_true", help="delete the store afterwards")
    parser.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        name, store, (steps, budget) = args.phase[0], Path(args.phase[1]), map(int, args.phase[2:])
        if name == "train":
            result = train_phase(store, steps, budget)
        else:
            result = sampler_rate(store, name, steps, budget)
        print(json.dumps(result))
        return
    BENCH.mkdir(parents=True, exist_ok=True)
    store = BENCH / f"volume-{args.size}.zarr"
    from distlg.data.store import is_complete

    prep = {} if is_complete(store) else ingest(args.size, store)
    budget = str(args.budget_mib << 20)
    resident = run_phase("shard", str(store), "40", budget)
    print("resident:", resident)
    streaming = run_phase("all", str(store), "0", budget)
    print("streaming:", streaming)
    trained = run_phase("train", str(store), str(args.steps), budget)
    print("train:", trained)
    report(args.size, args.budget_mib << 20, store, prep, resident, streaming, trained)
    if args.clean:
        shutil.rmtree(store)


if __name__ == "__main__":
    main()
