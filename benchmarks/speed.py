"""Training throughput of the paper's video configuration: distlg vs a straightforward baseline.

    python benchmarks/speed.py            # ~3 minutes on 2 cores; writes benchmarks/results/speed.md
    python benchmarks/speed.py --device cuda --precisions fp32 tf32 bf16 --markdown FILE
                                          # on a GPU (benchmarks/gpu_check.sh runs this)

Configuration (the paper's cat-video widths): 3 input dims, 3 outputs, 320 partitions, 55 local
and 180 global hidden units, 3 hidden layers, 200 samples per partition per step (64,000).
Every method runs whole training steps (forward, backward, Adam) on the same batch, in this
process, interleaved over several rounds (each starting one method later); the median step
time of each is reported, for 1 and 2 threads (CPU) or each precision (GPU). Achieved GFLOP/s
counts the matmul work of forward and backward; the matmul peak (2048x2048 on a CPU, 8192x8192
on a GPU, at the row's precision) is measured in the same run.

- baseline: the paper's own formulation, as its public code's ``LocalGlobalBlock`` (concat_and_fc)
  computes it: per depth the global layer, then the local layer (``bmm``, bias added in place,
  ``sin(30 x)``), then the shared merge (concatenate, linear, ``sin(30 x)``); linear layers as its
  ``BatchLinear`` (matmul with the transposed weight, bias added in place); autograd; mean
  squared error. (Its coordinates also require a gradient; that cost is left out here.)
- distlg: ``distlg.nn.fused.forward_backward`` (w0 in the GEMMs, split merge, in-place sine
  backward, chunks sized for the device) on an ``INR``; on a GPU also the autograd step with
  bf16 matmuls and the Triton kernel for the local layers (``distlg.training.steps``), and either step
  replayed as a CUDA graph (``--cuda-graph``).
- SIREN: one MLP with the same number of parameters (width 1030), distlg's fused step.
- ``--against REV``: also distlg's fused step as it was at git revision REV (its ``distlg``
  package extracted aside and imported under another name), in the same process and rounds,
  for the paper's architecture and (where REV has it) distlg's recipe.
- ``--compile``: also distlg's autograd formulation under ``torch.compile``.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import old_model_modules, write_results  # noqa: E402

from distlg.config import Config  # noqa: E402
from distlg.data.signal import Signal  # noqa: E402
from distlg.nn import fused  # noqa: E402
from distlg.nn.lattice import corner_count  # noqa: E402
from distlg.nn.model import INR, Architecture  # noqa: E402
from distlg.training.plan import make_plan  # noqa: E402

P, N, D, O, LAYERS, HL, HG, W0 = 320, 200, 3, 3, 3, 55, 180, 30.0
SIREN_WIDTH = 1030
CPU = torch.device("cpu")


class Baseline(nn.Module):
    """Local-Global SIREN as the paper's code computes it (``LocalGlobalBlock``, concat_and_fc)."""

    def __init__(self):
        super().__init__()
        def u(shape, bound):
            return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        # local layers as its LocallyConnectedLayer: weight [P, in, out], bias [P, out]
        self.lw = nn.ParameterList([u((P, D, HL), 1 / D)] +
                                   [u((P, HL, HL), math.sqrt(6 / HL) / W0) for _ in range(LAYERS)])
        self.lb = nn.ParameterList([u((P, HL), 0.5) for _ in range(LAYERS + 1)])
        self.ow, self.ob = u((P, HL, O), math.sqrt(6 / HL) / W0), u((P, O), 0.1)
        # global layers and merge as its BatchLinear: weight [out, in], bias [out]
        self.gw = nn.ParameterList([u((HG, D), 1 / D)] +
                                   [u((HG, HG), math.sqrt(6 / HG) / W0) for _ in range(LAYERS)])
        self.gb = nn.ParameterList([u((HG,), 0.5) for _ in range(LAYERS + 1)])
        self.mw, self.mb = u((HL, HL + HG), math.sqrt(6 / (HL + HG)) / W0), u((HL,), 0.1)

    @staticmethod
    def local(x, w, b):  # LocallyConnectedLayer.forward
        out = torch.bmm(x, w)
        out += b.unsqueeze(1)
        return out

    @staticmethod
    def batch_linear(x, w, b):  # BatchLinear.forward
        out = x.matmul(w.permute(-1, -2))
        out += b.unsqueeze(-2)
        return out

    def forward(self, coords):  # coords [P, n, D]
        p, n = coords.shape[:2]
        g, h = coords.reshape(p * n, D), coords
        for d in range(LAYERS + 1):
            g = torch.sin(30 * self.batch_linear(g, self.gw[d], self.gb[d]))
            l = torch.sin(30 * self.local(h, self.lw[d], self.lb[d]))
            cat = torch.cat([l, g.reshape(p, n, -1)], dim=2).reshape(p * n, -1)
            h = torch.sin(30 * self.batch_linear(cat, self.mw, self.mb)).reshape(p, n, -1)
        return self.local(h, self.ow, self.ob)


BASELINE = "baseline (paper's formulation)"


def baseline_step(model, opt, x, y, precision="fp32"):
    if precision == "bf16":  # the straightforward way: autocast the whole forward
        with torch.autocast(x.device.type, dtype=torch.bfloat16):
            out = model(x)
        loss = ((out.float() - y) ** 2).mean()
    else:
        loss = ((model(x) - y) ** 2).mean()
    loss.backward()
    opt.step()
    opt.zero_grad()


def fused_step(model, opt, x, y, step=None):
    (step or fused.forward_backward)(model, x, y, 1.0 / y.numel())
    opt.step()
    opt.zero_grad(set_to_none=False)


def matmul_flops_per_sample(arch: Architecture, partitions_dims: int) -> float:
    """Forward + backward matmul FLOPs per sample (no input gradient for the coordinates)."""
    if arch.on_lattice:  # per sample: the local layers and the interpolation (forward, backward)
        shapes = arch.local_shapes()
        width = arch.depths * arch.local_width + arch.out_dims
        lattice_macs = 2 * corner_count(arch.lattice) * width
    else:
        shapes, lattice_macs = {**arch.global_shapes(), **arch.local_shapes()}, 0
    macs = sum(s[0] * s[1] for n, s in shapes.items() if n.endswith("weight"))
    first = sum(s[0] * s[1] for n, s in shapes.items() if n in ("global.0.weight", "local.0.weight"))
    return 2.0 * (3 * macs - first + lattice_macs)


def lattice_arch(n: int) -> Architecture:
    """distlg's recipe at the same budget, as ``distlg train`` plans it: the paper's video grid
    (5, 8, 8) over a 60x256x256 clip, ``n`` samples per partition per step."""
    clip = Signal(np.broadcast_to(np.zeros((1, 1, 1, O), np.uint8), (60, 256, 256, O)), "video", (0, 255))
    budget = Architecture("local-global", D, O, LAYERS, HL, HG).total_params(P)
    config = Config().replace(factors=[5, 8, 8], params=budget, samples_per_partition=n)
    return make_plan(config, clip).arch


def peak_gflops(device: torch.device = CPU, precision: str = "fp32") -> float:
    """Measured matmul peak: 2048^3 float32 on a CPU; 8192^3 at ``precision`` on a GPU."""
    size = 2048 if device.type == "cpu" else 8192
    dtype = torch.bfloat16 if precision == "bf16" and device.type == "cuda" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    a @ b
    best = min(_time(lambda: a @ b, device) for _ in range(5))
    return 2 * size**3 / best / 1e9


def _time(fn, device: torch.device = CPU) -> float:
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def old_methods(rev: str, device: torch.device, x, y) -> dict:
    """distlg's fused step at ``rev`` (``package_at``): the paper's architecture, and distlg's
    recipe where that revision has the lattice."""
    model_old, fused_old = old_model_modules(rev)

    def step(m, o):
        fused_step(m, o, x, y, fused_old.forward_backward)

    lg = Architecture("local-global", D, O, LAYERS, HL, HG)
    old_lg = model_old.Architecture("local-global", D, O, LAYERS, HL, HG)
    out = {f"distlg at {rev}": (model_old.INR(old_lg, range(P)).to(device), step, lg)}
    lat = lattice_arch(x.shape[1])
    try:
        old_lat = model_old.Architecture.from_dict(lat.to_dict())
    except TypeError:  # a revision before the lattice
        return out
    out[f"distlg recipe at {rev}"] = (model_old.INR(old_lat, range(P)).to(device), step, lat)
    return out


def compiled_methods(device: torch.device, precision: str, x, y) -> dict:
    """distlg's autograd formulation (``INR.forward`` with the precision's matmuls) under ``torch.compile``
    (forward and loss compiled; AOTAutograd compiles the backward), for the paper's
    architecture and distlg's recipe: a candidate against the fused step and the Triton kernel,
    timed wherever it runs (compiling takes tens of seconds per shape)."""
    from distlg.training.steps import matmuls

    policy = matmuls(precision)

    def step_for():
        def sse(model, coords, values):
            return (model(coords, matmuls=policy) - values).pow(2).sum()

        compiled = torch.compile(sse)

        def step(m, o):
            compiled(m, x, y).mul(1.0 / y.numel()).backward()
            o.step()
            o.zero_grad(set_to_none=False)
        return step

    lg = Architecture("local-global", D, O, LAYERS, HL, HG)
    lat = lattice_arch(x.shape[1])
    return {"distlg, torch.compile": (INR(lg, range(P)).to(device), step_for(), lg),
            "distlg recipe, torch.compile": (INR(lat, range(P)).to(device), step_for(), lat)}


def methods_for(device: torch.device, precision: str, x, y) -> dict:
    """name -> (model, step(model, optimizer), architecture or None for the baseline)."""
    from distlg.training.steps import set_matmul_precision, training_step

    set_matmul_precision(precision)
    lg = Architecture("local-global", D, O, LAYERS, HL, HG)
    siren = Architecture("siren", D, O, LAYERS, 0, SIREN_WIDTH)
    xs, ys = x.reshape(1, -1, D), y.reshape(1, -1, O)
    ours = training_step(precision, "torch", device)
    lat = lattice_arch(x.shape[1])
    out = {BASELINE: (Baseline().to(device), lambda m, o: baseline_step(m, o, x, y, precision), lg),
           "distlg": (INR(lg, range(P)).to(device), lambda m, o: fused_step(m, o, x, y, ours), lg),
           "distlg recipe (lattice, equal params)": (
               INR(lat, range(P)).to(device), lambda m, o: fused_step(m, o, x, y, ours), lat)}
    if device.type == "cuda":  # the step replayed as a CUDA graph: no per-step launch work
        graphed = training_step(precision, "torch", device, cuda_graph=True)
        out["distlg, CUDA graph"] = (
            INR(lg, range(P)).to(device), lambda m, o: fused_step(m, o, x, y, graphed), lg)
        graphed_lat = training_step(precision, "torch", device, cuda_graph=True)
        out["distlg recipe, CUDA graph"] = (
            INR(lat, range(P)).to(device), lambda m, o: fused_step(m, o, x, y, graphed_lat), lat)
        try:
            tri = training_step(precision, "triton", device)
            out["distlg, Triton local layers"] = (
                INR(lg, range(P)).to(device), lambda m, o: fused_step(m, o, x, y, tri), lg)
        except Exception as exc:  # noqa: BLE001 - reported, the other rows still run
            print(f"Triton path unavailable: {exc}", flush=True)
    out["SIREN (distlg, equal params)"] = (
        INR(siren, [0]).to(device), lambda m, o: fused_step(m, o, xs, ys, ours), siren)
    return out


def measure(threads: int, rounds: int, device: torch.device = CPU,
            precision: str = "fp32", n: int = N, against: str | None = None,
            compiled: bool = False, only: list[str] | None = None,
            skip: list[str] | None = None) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = (torch.rand(P, n, D) * 2 - 1).to(device)
    y = (torch.rand(P, n, O) * 2 - 1).to(device)
    methods = methods_for(device, precision, x, y)
    if compiled:
        methods.update(compiled_methods(device, precision, x, y))
    if against:
        methods.update(old_methods(against, device, x, y))
    if only:  # the baseline always stays: every ratio is against it
        methods = {k: v for k, v in methods.items() if k == BASELINE or any(o in k for o in only)}
    if skip:
        methods = {k: v for k, v in methods.items() if not any(s in k for s in skip)}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-4) for k, (m, _, _) in methods.items()}
    times = {k: [] for k in methods}
    for k, (m, step, _) in list(methods.items()):  # warm-up (compiles Triton kernels, graphs)
        try:
            step(m, opts[k])
            step(m, opts[k])
        except Exception as exc:  # noqa: BLE001 - a failing path is reported, not fatal
            print(f"{k}: failed ({type(exc).__name__}: {str(exc).splitlines()[0][:200]})", flush=True)
            del methods[k], times[k]
    names = list(methods)
    for r in range(rounds):  # each round starts one method later: no method always follows another
        for k in names[r % len(names):] + names[:r % len(names)]:
            m, step, _ = methods[k]
            times[k].append(_time(lambda m=m, step=step, k=k: step(m, opts[k]), device))
    peak = peak_gflops(device, precision)
    rows = {}
    for k, ts in times.items():
        model, _, arch = methods[k]
        t = statistics.median(ts)
        rate = P * n / t
        parts = P if arch.arch != "siren" else 1
        rows[k] = {"params": sum(p.numel() for p in model.parameters()), "ms_per_step": 1e3 * t,
                   "samples_per_s": rate, "gflops": rate * matmul_flops_per_sample(arch, parts) / 1e9,
                   "peak": peak}
    return rows


def table(rows_by_setting: dict, echo: bool = True) -> list[str]:
    lines = ["| setting | method | parameters | ms/step | samples/s | speed-up vs baseline | "
             "GFLOP/s | % of matmul peak |", "|---|---|---|---|---|---|---|---|"]
    for setting, rows in rows_by_setting.items():
        base = rows.get(BASELINE, {}).get("samples_per_s", float("nan"))
        for name, r in rows.items():
            line = (f"| {setting} | {name} | {r['params']:,} | {r['ms_per_step']:.1f} | "
                    f"{r['samples_per_s']:,.0f} | {r['samples_per_s'] / base:.2f}x | "
                    f"{r['gflops']:,.0f} | {100 * r['gflops'] / r['peak']:.1f} % of "
                    f"{r['peak']:,.0f} |")
            if echo:
                print(line, flush=True)
            lines.append(line)
    return lines


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("rounds", type=int, nargs="?", default=7, help="timed steps per method")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="CPU threads to measure (default: 1 and 2 on a CPU)")
    parser.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "tf32", "bf16"])
    parser.add_argument("--samples", type=int, nargs="+", default=[N],
                        help="samples per partition per step (default: the paper's 200)")
    parser.add_argument("--against", metavar="REV", default=None,
                        help="also time distlg's fused step as it was at this git revision")
    parser.add_argument("--compile", action="store_true",
                        help="also time distlg's autograd formulation under torch.compile")
    parser.add_argument("--only", nargs="+", metavar="TEXT", default=None,
                        help="time only the methods whose names contain one of these (and the baseline)")
    parser.add_argument("--skip", nargs="+", metavar="TEXT", default=None,
                        help="leave out the methods whose names contain one of these")
    parser.add_argument("--markdown", default=None,
                        help="write the table to this file instead of results/speed.md")
    args = parser.parse_args()
    device = torch.device(args.device)
    threads = args.threads or ([1, 2] if device.type == "cpu" else [torch.get_num_threads()])
    settings = {}
    for n in args.samples:
        for precision in args.precisions:
            for t in threads:
                label = (f"{t} thread{'s' * (t > 1)}" if device.type == "cpu" else precision)
                label += f", {P}x{n}" if args.samples != [N] else ""
                if device.type == "cpu" and len(args.precisions) > 1:
                    label += f", {precision}"
                settings[label] = measure(t, args.rounds, device, precision, n, args.against,
                                          args.compile, args.only, args.skip)
                if args.markdown:  # as it goes: a run stopped by a time limit keeps its rows
                    Path(args.markdown).write_text("\n".join(table(settings, echo=False)) + "\n")
    lines = table(settings)
    if args.markdown:
        return
    write_results("speed", "Training throughput, paper's video configuration (320 partitions, "
                  "55 local / 180 global, 200 samples per partition per step)", lines)


if __name__ == "__main__":
    main()
