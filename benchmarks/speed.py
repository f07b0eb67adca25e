"""Training throughput of the paper's video configuration: distlg vs a straightforward baseline.

    python benchmarks/speed.py            # ~3 minutes on 2 cores; writes benchmarks/results/speed.md

Configuration (the paper's cat-video widths): 3 input dims, 3 outputs, 320 partitions, 55 local
and 180 global hidden units, 3 hidden layers, 200 samples per partition per step (64,000).
Every method runs whole training steps (forward, backward, Adam) on the same batch, in this
process, interleaved over several rounds; the median step time of each is reported, for 1 and
2 threads. Achieved GFLOP/s counts the matmul work of forward and backward; the float32 matmul
peak (2048x2048) is measured in the same run.

- baseline: the same network written the straightforward way (what the paper's code does):
  autograd, one batched matmul per local layer, ``sin(30 * x)``, concatenation + linear merge.
- distlg: ``distlg.nn.fused.forward_backward`` (w0 in the GEMMs, split merge, in-place sine
  backward, cache-sized chunks) on an ``INR``.
- SIREN: one MLP with the same number of parameters (width 1030), distlg's fused step.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

from distlg.nn import fused  # noqa: E402
from distlg.nn.model import INR, Architecture  # noqa: E402

P, N, D, O, LAYERS, HL, HG, W0 = 320, 200, 3, 3, 3, 55, 180, 30.0
SIREN_WIDTH = 1030


class Baseline(nn.Module):
    """Local-Global SIREN, straightforward: autograd, bmm, sin(30 x), concat + linear merge."""

    def __init__(self):
        super().__init__()
        def u(shape, bound):
            return nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.lw = nn.ParameterList([u((P, D, HL), 1 / D)] +
                                   [u((P, HL, HL), math.sqrt(6 / HL) / W0) for _ in range(LAYERS)])
        self.lb = nn.ParameterList([u((P, 1, HL), 0.5) for _ in range(LAYERS + 1)])
        self.ow, self.ob = u((P, HL, O), math.sqrt(6 / HL) / W0), u((P, 1, O), 0.1)
        self.glob = nn.ModuleList([nn.Linear(D if d == 0 else HG, HG) for d in range(LAYERS + 1)])
        self.merge = nn.Linear(HL + HG, HL)

    def forward(self, x):  # x [P, n, D]
        g, h = x.reshape(-1, D), x
        for d in range(LAYERS + 1):
            g = torch.sin(W0 * self.glob[d](g))
            l = torch.sin(W0 * (torch.bmm(h, self.lw[d]) + self.lb[d]))
            cat = torch.cat([l, g.reshape(P, N, HG)], dim=2)
            h = torch.sin(W0 * self.merge(cat))
        return torch.bmm(h, self.ow) + self.ob


def baseline_step(model, opt, x, y):
    loss = ((model(x) - y) ** 2).mean()
    loss.backward()
    opt.step()
    opt.zero_grad()


def fused_step(model, opt, x, y):
    fused.forward_backward(model, x, y, 1.0 / y.numel())
    opt.step()
    opt.zero_grad(set_to_none=False)


def matmul_flops_per_sample(arch: Architecture, partitions_dims: int) -> float:
    """Forward + backward matmul FLOPs per sample (no input gradient for the coordinates)."""
    shapes = {**arch.global_shapes(), **arch.local_shapes()}
    macs = sum(s[0] * s[1] for n, s in shapes.items() if n.endswith("weight"))
    first = sum(s[0] * s[1] for n, s in shapes.items() if n in ("global.0.weight", "local.0.weight"))
    return 2.0 * (3 * macs - first)


def peak_gflops() -> float:
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    best = min(_time(lambda: a @ b) for _ in range(5))
    return 2 * 2048**3 / best / 1e9


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(threads: int, rounds: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x, y = torch.rand(P, N, D) * 2 - 1, torch.rand(P, N, O) * 2 - 1
    lg = Architecture("local-global", D, O, LAYERS, HL, HG)
    siren = Architecture("siren", D, O, LAYERS, 0, SIREN_WIDTH)
    base = Baseline()
    ours = INR(lg, range(P))
    mlp = INR(siren, [0])
    methods = {
        "baseline (straightforward)": (base, lambda m, o: baseline_step(m, o, x, y)),
        "distlg": (ours, lambda m, o: fused_step(m, o, x, y)),
        "SIREN (distlg, equal params)": (mlp, lambda m, o: fused_step(m, o, x.reshape(1, -1, D),
                                                                      y.reshape(1, -1, O))),
    }
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-4) for k, (m, _) in methods.items()}
    times = {k: [] for k in methods}
    for k, (m, step) in methods.items():  # warm-up
        step(m, opts[k])
    for _ in range(rounds):
        for k, (m, step) in methods.items():
            times[k].append(_time(lambda m=m, step=step, k=k: step(m, opts[k])))
    peak = peak_gflops()
    flops = {"baseline (straightforward)": matmul_flops_per_sample(lg, P),
             "distlg": matmul_flops_per_sample(lg, P),
             "SIREN (distlg, equal params)": matmul_flops_per_sample(siren, 1)}
    params = {"baseline (straightforward)": sum(p.numel() for p in base.parameters()),
              "distlg": lg.total_params(P), "SIREN (distlg, equal params)": siren.total_params(1)}
    rows = {}
    for k, ts in times.items():
        t = statistics.median(ts)
        rate = P * N / t
        rows[k] = {"params": params[k], "ms_per_step": 1e3 * t, "samples_per_s": rate,
                   "gflops": rate * flops[k] / 1e9, "peak": peak}
    return rows


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    lines = ["| threads | method | parameters | ms/step | samples/s | speed-up vs baseline | "
             "GFLOP/s | % of matmul peak |", "|---|---|---|---|---|---|---|---|"]
    for threads in (1, 2):
        rows = measure(threads, rounds)
        base = rows["baseline (straightforward)"]["samples_per_s"]
        for name, r in rows.items():
            line = (f"| {threads} | {name} | {r['params']:,} | {r['ms_per_step']:.0f} | "
                    f"{r['samples_per_s']:,.0f} | {r['samples_per_s'] / base:.2f}x | "
                    f"{r['gflops']:.0f} | {100 * r['gflops'] / r['peak']:.0f} % of "
                    f"{r['peak']:.0f} |")
            print(line, flush=True)
            lines.append(line)
    write_results("speed", "Training throughput, paper's video configuration (320 partitions, "
                  "55 local / 180 global, 200 samples per partition per step)", lines)


if __name__ == "__main__":
    main()
