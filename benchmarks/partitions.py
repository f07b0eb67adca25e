"""What every command costs per partition: 10^3 to 10^6 partitions, before and after shards.

A synthetic 3-D occupancy volume (a thresholded sum of random plane waves, uint8) of
``side * 8`` voxels per axis is ingested and trained for 2 steps at 8^3 partitions
(``--partition-size 8 8 8 --compression 4``, one thread, one worker), the way a new user would;
then every command that reads or writes the model runs on it, each as its own process, timed
with its peak RSS (``/usr/bin/time``):

- train (its parts broken out: startup, steps, checkpoint, final model, sampled score),
- resume (one more step from the checkpoint; with 1 worker, and 2 workers at 10^5),
- info, export, crop of an octant and of a thin slab (one layer of partitions), render of a
  64^3 region,
- the model directory's bytes and files,
- the training step's cost per sample at 8, 16 and 256 samples per partition (10^5).

``--before REV`` runs the same commands with the code of commit REV (one file per partition)
for the sizes in ``--before-sizes`` (its per-partition costs make 10^5 and above take hours).

    python benchmarks/partitions.py                          # 10^3 .. 10^6, ~25 min
    python benchmarks/partitions.py --before 0e1c922 --before-sizes 1000 10000
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ["--partition-size", "8", "8", "8", "--compression", "4", "--threads", "1",
         "--no-progress", "--no-tensorboard"]


def make_volume(path: Path, side: int) -> None:
    """The synthetic volume, written slab by slab into an .npy (bounded memory)."""
    n = side * 8
    rng = np.random.default_rng(0)
    waves = [(rng.normal(0, 6, 3).astype(np.float32), rng.uniform(0, 2 * np.pi)) for _ in range(6)]
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, n, n))
    x = np.linspace(0, 1, n, dtype=np.float32)
    for a in range(0, n, 32):
        z = x[a:a + 32, None, None]
        field = sum(np.sin(2 * np.pi * (k[0] * z + k[1] * x[None, :, None] + k[2] * x[None, None, :]) + ph)
                    for k, ph in waves)
        out[a:a + 32] = (field > 0).astype(np.uint8) * 255
    out.flush()
    del out


def run(args: list[str], code: Path | None, env: dict | None = None) -> tuple[float, float, str]:
    """Run ``distlg ARGS`` (with the code at ``code``, default this checkout): (seconds, peak
    RSS MiB, output)."""
    environ = {**os.environ, **(env or {})}
    if code is not None:
        environ["PYTHONPATH"] = str(code)
    command = ["/usr/bin/time", "-f", "TIME %e %M", sys.executable, "-m", "distlg", *args]
    t0 = time.perf_counter()
    # run from the code's own folder: the current directory comes first on sys.path
    done = subprocess.run(command, capture_output=True, text=True, env=environ, cwd=code or ROOT)
    seconds = time.perf_counter() - t0
    found = re.findall(r"TIME ([\d.]+) (\d+)", done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"distlg {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return seconds, int(found[-1][1]) / 1024 if found else float("nan"), done.stdout


def launch(args: list[str], workers: int) -> tuple[float, float, str]:
    """``distlg ARGS`` under ``accelerate launch`` with ``workers`` CPU workers."""
    command = ["/usr/bin/time", "-f", "TIME %e %M", sys.executable, "-m", "accelerate.commands.launch",
               "--multi_gpu", "--num_processes", str(workers), "--num_machines", "1",
               "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "0",
               "-m", "distlg", *args]
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "ACCELERATE_USE_CPU": "1"})
    if done.returncode != 0:
        raise RuntimeError(f"launch failed:\n{done.stderr[-3000:]}")
    found = re.findall(r"TIME ([\d.]+) (\d+)", done.stderr)
    return time.perf_counter() - t0, int(found[-1][1]) / 1024 if found else float("nan"), done.stdout


def phases(output: str) -> dict[str, float]:
    """The ``time:`` line ``distlg train`` prints."""
    line = re.search(r"^time: (.*)$", output, re.M)
    return {k: float(v) for k, v in re.findall(r"(\w+) ([\d.]+) s", line.group(1))} if line else {}


def storage(path: Path) -> tuple[int, int]:
    files = [p for p in path.rglob("*") if p.is_file()]
    return len(files), sum(p.stat().st_size for p in files)


def measure(work: Path, side: int, code: Path | None, extra: bool) -> dict:
    """Every command at ``side``^3 partitions; ``extra``: also resume on 2 workers and the
    step's cost per sample."""
    n = side * 8
    store = work / f"vol{side}.zarr"
    if not store.exists():
        make_volume(work / f"vol{side}.npy", side)
        run(["ingest", str(work / f"vol{side}.npy"), str(store), "--kind", "volume",
             "--partition-size", "8", "8", "8", "--no-progress"], None)
        (work / f"vol{side}.npy").unlink()
    tag = "before" if code is not None else "after"
    out = work / f"run-{side}-{tag}"
    shutil.rmtree(out, ignore_errors=True)
    r: dict = {"partitions": side ** 3}
    s, rss, text = run(["train", "--signal", str(store), "--steps", "2", "--out", str(out), *TRAIN], code)
    r["train"], r["train_rss"], r["phases"] = s, rss, phases(text)
    model = out / "model"
    r["weights"] = int(re.search(r"([\d,]+) parameters", text).group(1).replace(",", "")) * 4
    r["files"], r["bytes"] = storage(model)
    r["resume"] = run(["train", "--signal", str(store), "--steps", "3", "--out", str(out), "--resume",
                       *TRAIN], code)[0]
    r["info"] = run(["info", str(model)], code)[0]
    shutil.rmtree(work / "ex", ignore_errors=True)
    r["export"] = run(["export", str(out), str(work / "ex"), "--no-progress"], code)[0]
    half, slab = n // 2, 8
    for name, box in (("crop_octant", f"0:{half},0:{half},0:{half}"), ("crop_slab", f"0:{slab}")):
        shutil.rmtree(work / name, ignore_errors=True)
        crop = ["crop", str(model), str(work / name), "--keep", box]
        r[name] = run(crop + (["--no-progress"] if code is None else []), code)[0]
        shutil.rmtree(work / name, ignore_errors=True)
    render = ["render", str(model), "--region", "0:64,0:64,0:64", "--threads", "1"]
    r["render"], r["render_rss"], _ = run(render + ["--out", str(work / "r.npy"), "--no-progress"], code)
    (work / "r.npy").unlink()
    shutil.rmtree(work / "ex", ignore_errors=True)
    if extra:
        r["resume_2"] = launch(["train", "--signal", str(store), "--steps", "4", "--out", str(out),
                                "--resume", *TRAIN[:-4], "--no-progress", "--no-tensorboard"], 2)[0]
        r["per_sample"] = {}
        for k in (8, 16, 256):
            o = work / f"steps-{k}"
            shutil.rmtree(o, ignore_errors=True)
            text = run(["train", "--signal", str(store), "--steps", "4", "--checkpoint-every", "0",
                        "--eval", "sample", "--samples-per-partition", str(k), "--out", str(o), *TRAIN],
                       code)[2]
            r["per_sample"][k] = phases(text)["steps"] / (4 * k * side ** 3)
            shutil.rmtree(o, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    return r


def table(rows: list[dict]) -> list[str]:
    head = ("| layout | partitions | weights (MB) | train (s) | startup | steps | checkpoint | model | "
            "score | resume | info | export | crop octant | crop slab | render 64^3 (s / MiB) | "
            "model dir (MB / files) | bytes / weights |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        p = r["phases"]
        lines.append(
            f"| {r['tag']} | {r['partitions']:,} | {r['weights'] / 1e6:.1f} | {r['train']:.1f} | "
            f"{p.get('startup', float('nan')):.1f} | {p.get('steps', float('nan')):.1f} | "
            f"{p.get('checkpoints', float('nan')):.1f} | {p.get('model', float('nan')):.1f} | "
            f"{p.get('score', float('nan')):.1f} | {r['resume']:.1f} | {r['info']:.2f} | "
            f"{r['export']:.1f} | {r['crop_octant']:.1f} | {r['crop_slab']:.1f} | "
            f"{r['render']:.2f} / {r['render_rss']:.0f} | {r['bytes'] / 1e6:.1f} / {r['files']:,} | "
            f"{r['bytes'] / r['weights']:.2f} |")
    return lines


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    keys = [("train", "train"), ("info", "info"), ("export", "export"), ("crop_octant", "crop octant"),
            ("render", "render 64^3")]
    for tag, style in (("after", "-o"), ("before", "--x")):
        mine = [r for r in rows if r["tag"] == tag]
        if not mine:
            continue
        x = [r["partitions"] for r in mine]
        for key, label in keys:
            axes[0].loglog(x, [r[key] for r in mine], style, label=f"{label} ({tag})")
        axes[1].loglog(x, [r["files"] for r in mine], style, label=f"files ({tag})")
        axes[1].loglog(x, [r["bytes"] / r["weights"] for r in mine], style, label=f"bytes/weights ({tag})")
    axes[0].set(xlabel="partitions", ylabel="seconds (whole command)", title="time per command")
    axes[1].set(xlabel="partitions", title="model directory")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e3, 1e4, 1e5, 1e6],
                        help="partition counts (rounded to cubes)")
    parser.add_argument("--before", metavar="REV", help="also run commit REV's code")
    parser.add_argument("--before-sizes", type=float, nargs="+", default=[1e3, 1e4])
    parser.add_argument("--work", default=str(ROOT / "storage" / "bench" / "partitions"))
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    old = None
    if args.before:
        old = work / "before-code"
        shutil.rmtree(old, ignore_errors=True)
        subprocess.run(["git", "worktree", "add", "--detach", "-f", str(old), args.before], cwd=ROOT,
                       check=True, capture_output=True)
    rows = []
    try:
        for size in args.sizes:
            side = round(size ** (1 / 3))
            r = measure(work, side, None, extra=side ** 3 == round(1e5 ** (1 / 3)) ** 3)
            rows.append({**r, "tag": "after"})
            print(json.dumps(rows[-1]), flush=True)
        for size in (args.before_sizes if old else []):
            side = round(size ** (1 / 3))
            rows.append({**measure(work, side, old, extra=False), "tag": "before"})
            print(json.dumps(rows[-1]), flush=True)
    finally:
        if old is not None:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, capture_output=True)
    load = os.getloadavg()
    plot(rows, RESULTS / "partitions.png")
    lines = table(sorted(rows, key=lambda r: (r["tag"] != "after", r["partitions"])))
    extra = [r for r in rows if "per_sample" in r]
    notes = [f"Load average during the run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1 / 5 / 15 min).",
             "", "![time per command and model directory](partitions.png)"]
    for r in extra:
        ps = r["per_sample"]
        notes += ["", f"At {r['partitions']:,} partitions: resume on 2 workers {r['resume_2']:.1f} s; "
                  f"step cost per sample {ps[8] * 1e6:.2f} / {ps[16] * 1e6:.2f} / {ps[256] * 1e6:.2f} "
                  f"microseconds at 8 / 16 / 256 samples per partition ({ps[8] / ps[256]:.2f}x and "
                  f"{ps[16] / ps[256]:.2f}x the cost at 256)."]
    (work / "rows.json").write_text(json.dumps(rows, indent=1))
    write_results("partitions", "Per-partition costs of every command, 10^3 to 10^6 partitions", lines,
                  "\n".join(notes))


if __name__ == "__main__":
    main()
