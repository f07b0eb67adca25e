"""GPU measurements that benchmarks/gpu_check.sh gathers into results/gpu.md (one part each).

    python benchmarks/gpu_bench.py env    FILE   # device, driver, torch / CUDA / Triton versions
    python benchmarks/gpu_bench.py image  FILE   # the paper's image setting at full size
    python benchmarks/gpu_bench.py memory FILE   # peak GPU memory of training steps

Each part appends Markdown lines to FILE as it goes, so a part stopped by its time limit still
leaves what it measured.

image: scikit-image's astronaut at its full 512x512 (RGB, values in [-1, 1]), ~200 K weights (4
values per weight), (16, 16) partitions of 32x32 pixels, full batch (every pixel every step),
Adam at lr 5e-4, 2000 steps, PSNR on [0, 1] over every pixel every 500 steps (off the clock):
Local-Global vs SIREN-per-partition vs SIREN in float32, then Local-Global in tf32 and bf16 (the
PSNR each precision costs). The paper's Table 1 (25 DIV2K images at full size, (16, 16)
partitions, GPU) gives Local-Global 33.94 dB, SIREN 33.57, SIREN-per-partition 31.73.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import run_config  # noqa: E402

SCRATCH = Path("/tmp/distlg-gpu-bench")
PAPER = {"local-global": 33.94, "siren": 33.57, "per-partition": 31.73}
IMAGE = dict(path="builtin:astronaut@512x512", factors=[16, 16], params=200_000, lr=5e-4,
             steps=2000, eval_every=500, checkpoint_every=0, device="cuda")
RUNS = [("local-global", "fp32"), ("per-partition", "fp32"), ("siren", "fp32"),
        ("local-global paper", "fp32"), ("local-global", "tf32"), ("local-global", "bf16"),
        ("per-partition", "bf16")]
"""(method, precision); "local-global" is distlg's recipe (global branch on a lattice),
"local-global paper" the paper's formulation (``--recipe paper``)."""


def emit(path: Path, *lines: str) -> None:
    with open(path, "a") as fh:
        for line in lines:
            print(line, flush=True)
            fh.write(line + "\n")


def env(out: Path) -> None:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                          "--format=csv,noheader"], capture_output=True, text=True)
    try:
        import triton
        tri = triton.__version__
    except ImportError as exc:
        tri = f"not importable ({exc})"
    try:
        nccl = torch.cuda.nccl.version()
        nccl = ".".join(map(str, nccl)) if isinstance(nccl, tuple) else str(nccl)
    except Exception as exc:  # noqa: BLE001 - a version string is not worth failing for
        nccl = f"unknown ({exc})"
    props = torch.cuda.get_device_properties(0)
    emit(out, f"- device: {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}, "
              f"{props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs "
              f"(nvidia-smi: {smi.stdout.strip() or smi.stderr.strip()[:100]})",
         f"- torch {torch.__version__}, CUDA {torch.version.cuda}, NCCL {nccl}, Triton {tri}, Python "
         f"{sys.version.split()[0]}")


def image(out: Path) -> None:
    emit(out, "| method | precision | widths (local / global) | params | PSNR 500 | 1000 | 1500 | "
              "2000 (best) | train s | ms/step | peak GPU MiB | paper Table 1 |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|")
    cuda = torch.cuda.is_available()
    for arch, precision in RUNS:
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        paper = arch == "local-global paper"
        method = dict(arch="local-global", recipe="paper") if paper else dict(arch=arch)
        r = run_config(precision=precision, seed=0, out=str(SCRATCH / f"image-{arch}-{precision}"),
                       **method, **IMAGE)
        wall = time.perf_counter() - t0
        evals = {h["step"]: h["psnr"] for h in r.history if "psnr" in h}
        cells = [f"{evals[s]:.2f}" if s in evals else "–" for s in (500, 1000, 1500)]
        best = max(evals.values())
        a = r.plan.arch
        emit(out, f"| {arch} | {precision} | {a.local_width or '–'} / {a.global_width or '–'} | "
                  f"{a.total_params(r.plan.grid.num_partitions):,} | {' | '.join(cells)} | "
                  f"{r.final.psnr:.2f} ({best:.2f}) | {r.seconds:.1f} | "
                  f"{1e3 * r.seconds / r.steps_run:.2f} | "
                  f"{torch.cuda.max_memory_allocated() / 2**20 if cuda else 0:,.0f} | "
                  f"{PAPER.get(arch, '') if precision == 'fp32' else ''} |")
        print(f"  ({arch} {precision}: {wall:.0f} s with evaluations)", flush=True)


def memory(out: Path) -> None:
    from speed import HG, HL, LAYERS, Baseline, D, O, P, baseline_step, fused_step

    from distlg.nn.model import INR, Architecture
    from distlg.training.steps import training_step

    emit(out, "| step | samples per step | peak GPU MiB | held after the step MiB |",
         "|---|---|---|---|")
    arch = Architecture("local-global", D, O, LAYERS, HL, HG)
    for n in (200, 2000):
        x = torch.rand(P, n, D, device="cuda") * 2 - 1
        y = torch.rand(P, n, O, device="cuda") * 2 - 1
        graphed = training_step("fp32", "torch", torch.device("cuda"), cuda_graph=True)
        for name, model, step in (
                ("baseline (paper's formulation)", Baseline(), baseline_step),
                ("distlg fused", INR(arch, range(P)), fused_step),
                ("distlg fused, CUDA graph (capture included)", INR(arch, range(P)),
                 lambda m, o, x, y, g=graphed: fused_step(m, o, x, y, g))):
            model = model.cuda()
            opt = torch.optim.Adam(model.parameters(), lr=1e-4)
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
            step(model, opt, x, y)
            torch.cuda.synchronize()
            emit(out, f"| {name} | {P} x {n} = {P * n:,} | "
                      f"{torch.cuda.max_memory_allocated() / 2**20:,.0f} | "
                      f"{(torch.cuda.memory_allocated() - before) / 2**20:,.0f} |")
            del model, opt
        torch.cuda.empty_cache()


if __name__ == "__main__":
    part, target = sys.argv[1], Path(sys.argv[2])
    {"env": env, "image": image, "memory": memory}[part](target)
