"""Scaling out: 1 worker vs 2 workers on the same video, and bytes on the wire per step.

    python benchmarks/scaling.py          # ~5 minutes on 2 cores; writes results/scaling.md

The paper's video configuration: 55 local / 180 global hidden units, 3 hidden layers,
(5, 8, 8) = 320 partitions with (1, 2, 2) halos, 200 samples per partition per step, on
../shared/data/bikes.mp4 (250 frames of 272x640, ingested once into storage/signals/).
Runs the real launcher: ``distlg train --threads 1`` for one worker, and
``accelerate launch --config_file launch/cpu.yaml`` (2 workers, 1 thread each) for two.
Bytes per step are read from each run's report: the flat bucket of replicated gradients (plus
two float32 statistics) that every worker all-reduces; they are also listed for other
partition counts at the same widths, where only the local weights grow.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

from distlg.nn.model import Architecture  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT.parent / "shared" / "data" / "bikes.mp4"
STORE = ROOT / "storage" / "signals" / "bikes.zarr"
STEPS = 30
ARGS = ["--signal", str(STORE), "--factors", "5", "8", "8", "--overlaps", "1", "2", "2",
        "--local-width", "55", "--global-width", "180", "--samples-per-partition", "200",
        "--steps", str(STEPS), "--lr", "1e-4", "--no-progress", "--no-tensorboard"]


def ingest() -> None:
    """Ingest bikes.mp4 (a complete store is kept as it is; an interrupted one resumes)."""
    subprocess.run([sys.executable, "-m", "distlg", "ingest", str(SOURCE), str(STORE),
                    "--factors", "5", "8", "8", "--no-progress"], check=True)


def train(workers: int, out: str) -> dict:
    cmd = [sys.executable, "-m", "distlg", "train", *ARGS, "--threads", "1", "--out", out]
    if workers > 1:
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(ROOT / "launch" / "cpu.yaml"), "--num_processes", str(workers),
               "-m", "distlg", "train", *ARGS, "--out", out]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        sys.exit(proc.stdout + proc.stderr)
    text = proc.stdout
    rate = float(re.search(r"\(([\d,]+) samples/s", text).group(1).replace(",", ""))
    rss = [float(v) for v in re.findall(r"(\d+) MiB", text.split("peak RSS per worker:")[1].split(";")[0])]
    wire = int(re.search(r"all-reduce ([\d,]+) B/step", text.split("peak RSS")[1]).group(1).replace(",", ""))
    psnr = float(re.search(r"PSNR ([\d.]+) dB", text.split("trained")[1]).group(1))
    return {"rate": rate, "rss": rss, "bytes": wire, "psnr": psnr}


def main() -> None:
    ingest()
    runs = {n: train(n, str(ROOT / "storage" / "bench" / f"scaling-{n}")) for n in (1, 2)}
    arch = Architecture("local-global", 3, 3, 3, 55, 180)
    lines = ["| workers x threads | samples/s (sum) | speed-up | peak RSS per worker | local "
             "weights per worker | all-reduce bytes/step | PSNR after 30 steps |",
             "|---|---|---|---|---|---|---|"]
    for n, r in runs.items():
        local = -(-320 // n) * arch.local_params()
        lines.append(f"| {n} x 1 | {r['rate']:,.0f} | {r['rate'] / runs[1]['rate']:.2f}x | "
                     + ", ".join(f"{m:.0f} MiB" for m in r["rss"])
                     + f" | {local:,} | {r['bytes']:,} | {r['psnr']:.2f} |")
    lines += ["", "Replicated gradients per step against the partition count (same widths):", "",
              "| partitions | all weights | global + merge weights | share | bytes all-reduced per step |",
              "|---|---|---|---|---|"]
    for parts in (40, 320, 2560):
        total = arch.total_params(parts)
        lines.append(f"| {parts} | {total:,} | {arch.global_params():,} | "
                     f"{arch.global_params() / total:.1%} | {4 * arch.global_params():,} |")
    for line in lines:
        print(line)
    write_results("scaling", "Scaling: 1 vs 2 CPU workers, paper's video configuration", lines,
                  "The all-reduce bytes reported by the runs are the flat bucket of replicated "
                  f"gradients ({4 * arch.global_params():,} B) plus two float32 statistics (8 B); "
                  "local gradients never leave their worker.")


if __name__ == "__main__":
    main()
