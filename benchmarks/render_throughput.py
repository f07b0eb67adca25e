"""Render throughput and memory: the whole signal, a 1/8 region, and a region larger than RAM
allowed to the render.

    python benchmarks/render_throughput.py     # ~1.5 minutes on 2 cores; writes
                                               # benchmarks/results/render_throughput.md

Model: a Local-Global SIREN of a 64x256x256 RGB video at the trainer's video budget (64 values
per weight: 206,270 weights, local width 14, global width 76), 4x8x8 partitions with (1, 2, 2)
halos, freshly initialised (throughput does not depend on the weights' values) and written as
a model directory. Each measurement runs ``distlg.rendering.render.RegionRender`` in a fresh process with
torch's default threads, so the peak RSS it reports is its own:

- ``frame``: one frame (the fixed cost: Python, torch, one layer of partitions);
- ``whole``: the whole signal at scale 1, values only (no writer);
- ``eighth``: a 1/8 region (half of every axis), values only;
- ``large``: the whole signal at scale 3 in time and 2 in space (12x the samples: 151M values,
  576 MiB as float32) streamed into a Zarr store. Its peak RSS must stay under ``frame``'s plus
  ``BOUND_MIB``, which is less than the region it renders.
- ``large_ome``: the same as an OME-Zarr of 3 levels (each rendered from the model at its
  scale: 198M values in all), under the same bound.

Values are samples x channels; throughput is values per second of wall time.
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

SHAPE, FACTORS, OVERLAPS, PARAMS = (64, 256, 256), (4, 8, 8), (1, 2, 2), 196_608
BOUND_MIB = 64
"""Memory a render may take beyond the fixed cost, whatever the region's size."""
CASES = {
    "frame": ("0:1,:,:", "1"),
    "whole": (None, "1"),
    "eighth": ("0:32,0:128,0:128", "1"),
    "large": (None, "3,2,2"),
    "large_ome": (None, "3,2,2"),
}
OME_LEVELS = 3


def build_model(path: Path) -> None:
    import numpy as np

    from distlg.data.signal import SignalInfo
    from distlg.geometry import PartitionGrid
    from distlg.nn.budget import fit_widths
    from distlg.nn.model import INR
    from distlg.training.checkpoint import write_model
    from distlg.training.distributed import World

    grid = PartitionGrid(SHAPE, FACTORS, OVERLAPS)
    arch = fit_widths("local-global", PARAMS, grid.num_partitions, 3, 3)
    info = SignalInfo("video", SHAPE, 3, np.dtype("uint8"), (0.0, 255.0), fps=25)
    write_model(path, INR(arch, range(grid.num_partitions)), World(), grid, info)


def child(model: str, region: str, scale: str, out: str) -> None:
    """One measurement in this (fresh) process: print it as JSON."""
    from distlg.modeldir.format import ModelDir
    from distlg.rendering import omezarr
    from distlg.rendering.region import parse_box, parse_scale
    from distlg.rendering.render import RegionRender
    from distlg.rendering.writers import open_writer

    md = ModelDir.open(model)
    box = parse_box(None if region == "-" else region, md.grid.shape, md.signal.axes)
    plan = RegionRender(md, box, parse_scale(scale, md.grid.ndim))
    plans = [plan]
    if omezarr.is_ome(out):
        scales = omezarr.level_scales(plan.render_grid.scale, plan.info, OME_LEVELS)
        plans += [RegionRender(md, box, s) for s in scales[1:]]
        writer = omezarr.open_ome_writer(out, plans)
    else:
        writer = open_writer(out, plan) if out != "-" else None
    t0 = time.perf_counter()
    for part in plans:
        for slab in part:
            if writer is not None:
                writer.write(slab)
    if writer is not None:
        writer.close()
    seconds = time.perf_counter() - t0
    print(json.dumps({"values": sum(math.prod(p.shape) for p in plans), "seconds": seconds,
                      "partitions": len(plan.reads), "shape": list(plan.shape),
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(model: Path, region: str | None, scale: str, out: str) -> dict:
    cmd = [sys.executable, __file__, "--child", str(model), region or "-", scale, out]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="render-bench-"))
    try:
        build_model(work / "model")
        results = {}
        for name, (region, scale) in CASES.items():
            outs = {"large": "large.zarr", "large_ome": "large.ome.zarr"}
            out = str(work / outs[name]) if name in outs else "-"
            results[name] = r = measure(work / "model", region, scale, out)
            print(f"{name:7s} {' x '.join(map(str, r['shape']))}: {r['values']:,} values in "
                  f"{r['seconds']:.2f} s = {r['values'] / r['seconds']:,.0f} values/s; "
                  f"{r['partitions']} partitions; peak RSS {r['peak_rss_mib']:.0f} MiB", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results)


def report(results: dict) -> None:
    base, large, ome = results["frame"]["peak_rss_mib"], results["large"], results["large_ome"]
    rendered_mib = large["values"] * 4 / 2**20
    ok = max(large["peak_rss_mib"], ome["peak_rss_mib"]) <= base + BOUND_MIB < rendered_mib
    lines = ["| case | region x scale | values | partitions read | seconds | values/s | peak RSS |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, (region, scale) in CASES.items():
        r = results[name]
        lines.append(f"| {name} | {region or 'all'} x {scale} | {r['values']:,} | {r['partitions']} | "
                     f"{r['seconds']:.2f} | {r['values'] / r['seconds']:,.0f} | "
                     f"{r['peak_rss_mib']:.0f} MiB |")
    notes = (f"Bound: the large render ({rendered_mib:.0f} MiB of float32 values, streamed to "
             f"Zarr) peaked at {large['peak_rss_mib']:.0f} MiB RSS, {large['peak_rss_mib'] - base:.0f} "
             f"MiB above the one-frame render's {base:.0f} MiB; the bound, {base + BOUND_MIB:.0f} MiB "
             f"(+{BOUND_MIB} MiB), is smaller than the region: {'held' if ok else 'NOT HELD'}. "
             f"As an OME-Zarr of {OME_LEVELS} levels ({ome['values'] * 4 / 2**20:.0f} MiB of values, "
             f"each level rendered from the model) it peaked at {ome['peak_rss_mib']:.0f} MiB."
             f"\n\nModel: {SHAPE} RGB video, {FACTORS} partitions, {PARAMS:,}-weight budget "
             "(see the script's docstring). The machine is shared, so timings carry some noise.")
    print(notes)
    write_results("render_throughput", "Render throughput and memory", lines, notes)
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(*sys.argv[2:6])
    else:
        main()
