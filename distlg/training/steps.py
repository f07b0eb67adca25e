"""Which training step runs, by precision and kernel; the matmul precision flags.

- ``fp32`` / ``tf32`` with the torch kernel: ``distlg.fused.forward_backward`` (the default;
  tf32 lets CUDA's float32 matmuls use TF32 tensor cores, a no-op on the CPU);
- ``bf16``, or the ``triton`` kernel: ``autograd_forward_backward`` below, the model's forward
  written with autograd, where every matmul takes bfloat16 inputs under bf16 (float32 results)
  and the local layers run as Triton kernels under ``triton``. Biases, sines, the loss and the
  gradients' accumulation stay in float32: sin(w0 z) with w0 = 30 loses its phase in bfloat16.

INCODE models always take ``autograd_forward_backward``, given the harmonizer's coefficients
(``coefficients``: a function computing them, differentiably, once per step).

On CUDA either step can run as a captured graph (``CudaGraphStep``, ``--cuda-graph``).

Both return the step's sum of squared errors as a float64 tensor on the device and add the
gradient of ``scale * sse`` to every ``.grad`` in place (the replicated gradients are views into
the all-reduce bucket).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Callable, Mapping

import torch
from torch import Tensor

from ..errors import DistlgError
from ..nn import fused, lattice
from ..nn.model import INR, Activation, Architecture

PRECISIONS = ("fp32", "tf32", "bf16")
KERNELS = ("torch", "triton")


def set_matmul_precision(precision: str) -> None:
    """Float32 matmuls in IEEE float32 (fp32) or TF32 (tf32, bf16) on CUDA."""
    if precision not in PRECISIONS:
        raise DistlgError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    torch.backends.cuda.matmul.allow_tf32 = precision != "fp32"
    torch.backends.cudnn.allow_tf32 = precision != "fp32"


StepFn = Callable[[INR, Tensor, Tensor, float], Tensor]


def training_step(precision: str = "fp32", kernel: str = "torch",
                  device: torch.device | None = None,
                  coefficients: Callable[[], Tensor] | None = None,
                  cuda_graph: bool = False) -> StepFn:
    """The step function for ``precision`` and ``kernel`` on ``device``, replayed as a CUDA
    graph with ``cuda_graph``; a one-line ``DistlgError`` for a combination that cannot run
    there. ``coefficients``: an INCODE model's, computed in each step (the autograd step then
    runs whatever the precision)."""
    step = _step(precision, kernel, device, coefficients)
    if not cuda_graph:
        return step
    if device is None or device.type != "cuda":
        raise DistlgError("--cuda-graph needs a CUDA device")
    if coefficients is not None:
        raise DistlgError("--cuda-graph: INCODE models compute their coefficients in each step "
                          "and run without a graph; leave --cuda-graph off")
    return CudaGraphStep(step)


def _step(precision: str, kernel: str, device: torch.device | None,
          coefficients: Callable[[], Tensor] | None) -> StepFn:
    if kernel not in KERNELS:
        raise DistlgError(f"unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    set_matmul_precision(precision)
    if kernel == "triton":
        if device is None or device.type != "cuda":
            raise DistlgError("--kernel triton needs a CUDA device (the torch kernel runs everywhere)")
        try:
            from ..kernels import grouped_mlp  # noqa: F401
        except ImportError as exc:
            raise DistlgError(f"--kernel triton: triton cannot be imported ({exc})") from None
    if kernel == "torch" and precision != "bf16" and coefficients is None:
        return fused.forward_backward

    def step(model: INR, coords: Tensor, values: Tensor, scale: float) -> Tensor:
        return autograd_forward_backward(model, coords, values, scale, precision, kernel,
                                         coefficients)

    return step


def _bf16(t: Tensor) -> Tensor:
    return t.to(torch.bfloat16)


def _linear(x: Tensor, w: Tensor, b: Tensor, alpha: float, low: bool) -> Tensor:
    """alpha (x W + b), float32; the matmul in bfloat16 when ``low``."""
    if low:
        return (_bf16(x) @ _bf16(w)).float().add_(b).mul_(alpha)
    return torch.addmm(b, x, w, beta=alpha, alpha=alpha)


def _grouped(x: Tensor, w: Tensor, b: Tensor, w0: float, sine: bool, precision: str,
             kernel: str) -> Tensor:
    if kernel == "triton":
        from ..kernels.grouped_mlp import grouped_linear

        return grouped_linear(x, w, b, w0, sine, precision)
    if precision == "bf16":
        z = torch.bmm(_bf16(x), _bf16(w)).float().add_(b.unsqueeze(1))
    else:
        z = torch.baddbmm(b.unsqueeze(1), x, w)
    return torch.sin(w0 * z) if sine else z


def _sine(act: Activation, layers: str, x: Tensor, w: Tensor, b: Tensor, low: bool) -> Tensor:
    """The sine layer x -> sin(w0 (x W + b)), w0 riding in the GEMM, or INCODE's activation."""
    if not act.sets:
        return torch.sin(_linear(x, w, b, act.w0, low))
    return act(_linear(x, w, b, 1.0, low), layers)


def autograd_forward(model: INR, x: Tensor, precision: str = "fp32", kernel: str = "torch",
                     coefficients: Tensor | None = None,
                     tensors: Mapping[str, Tensor] | None = None) -> Tensor:
    """``INR.forward`` for scaled coordinates ``x`` [P, n, in] over every held partition, with
    bf16 matmuls and/or Triton local layers (``coefficients``: an INCODE model's).
    ``tensors``: the model's tensors by name (default: its own), e.g. float64 copies
    (``distlg.training.exact``)."""
    a, low = model.arch, precision == "bf16"
    act = model.activation(coefficients)
    t = model if tensors is None else tensors
    groups, n, _ = x.shape
    if a.on_lattice:
        return _lattice_forward(model, x, precision, kernel, act, tensors)
    g, h = x.reshape(groups * n, a.in_dims), x
    for d in range(a.depths):
        if a.has_global:
            g = _sine(act, "global", g, t[f"global.{d}.weight"], t[f"global.{d}.bias"], low)
        if a.has_local:
            wl, bl = t[f"local.{d}.weight"], t[f"local.{d}.bias"]
            if act.sets:
                l = act(_grouped(h, wl, bl, 1.0, False, precision, kernel), "local")
            else:
                l = _grouped(h, wl, bl, act.w0, True, precision, kernel)
            h = _merge(a, t, d, l, g, low, act) if a.merge_count else l
    if not a.has_local:
        return _linear(g, t["out.weight"], t["out.bias"], 1.0, low).view(groups, n, -1)
    return _grouped(h, t["local.out.weight"], t["local.out.bias"], 1.0, False, precision, kernel)


def _lattice_forward(model: INR, x: Tensor, precision: str, kernel: str, act: Activation,
                     tensors: Mapping[str, Tensor] | None) -> Tensor:
    """The lattice merge ("bias"): interpolated global features added inside each local layer."""
    a, width = model.arch, model.arch.local_width
    t = model if tensors is None else tensors
    ids = model.partitions
    zg = lattice.interpolate(model.lattice_features(ids, act, tensors),
                             lattice.interpolation(a, x / model.coord_scale, ids))
    h = x
    for d in range(a.depths):
        pre = _grouped(h, t[f"local.{d}.weight"], t[f"local.{d}.bias"], 1.0, False,
                       precision, kernel)
        h = act(pre + zg[..., d * width:(d + 1) * width], "local")
    out = _grouped(h, t["local.out.weight"], t["local.out.bias"], 1.0, False, precision, kernel)
    return out + zg[..., a.depths * width:]


def _merge(a: Architecture, t: Mapping[str, Tensor], d: int, l: Tensor, g: Tensor, low: bool,
           act: Activation) -> Tensor:
    m = 0 if a.merge == "shared" else d
    w, b = t[f"merge.{m}.weight"], t[f"merge.{m}.bias"]
    groups, n, width = l.shape
    if a.merge == "add":
        return l + _sine(act, "merge", g, w, b, low).view(groups, n, width)
    lg = torch.cat([l.reshape(groups * n, width), g], dim=1)
    return _sine(act, "merge", lg, w, b, low).view(groups, n, width)


def ensure_grads(model: INR) -> None:
    """A zero ``.grad`` for every parameter that has none (the replicated ones already have
    theirs: views into the all-reduce bucket), for the backward pass to add to."""
    for p in model.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)


def autograd_forward_backward(model: INR, coords: Tensor, values: Tensor, scale: float,
                              precision: str = "fp32", kernel: str = "torch",
                              coefficients: Callable[[], Tensor] | None = None) -> Tensor:
    """Add the gradient of ``scale * sse`` to every ``.grad`` (in place); return sse.
    ``coefficients``: computes an INCODE model's coefficients (their gradient flows back
    into whatever computed them); default: the model's stored ones."""
    ensure_grads(model)
    with torch.enable_grad():
        c = coefficients() if coefficients is not None else None
        out = autograd_forward(model, coords * model.coord_scale, precision, kernel, c)
        err = out - values
        sse = err.pow(2).sum(dtype=torch.float64)
        torch.autograd.backward(err.pow(2).sum().mul(scale))
    return sse.detach()


@dataclass
class _Captured:
    graph: "torch.cuda.CUDAGraph"
    model: INR
    addresses: list[int]  # of every parameter and its .grad at capture
    coords: Tensor        # the static batch a replay reads
    values: Tensor
    sse: Tensor           # what a replay writes


def _addresses(model: INR) -> list[int]:
    return [t.data_ptr() for p in model.parameters() for t in (p, p.grad)]


class CudaGraphStep:
    """A training step replayed as a captured CUDA graph: the Python and kernel-launch work of
    a step paid once per batch shape, not every step (measured on an H200: at 64 K samples per
    step every method took 6-8 ms whatever its arithmetic, i.e. was launch-bound).

    The first call for a batch shape runs the step a few times on a side stream (lazy
    initialisation, library workspaces), captures one call over static copies of the batch,
    and puts every ``.grad`` back as it was; later calls copy their batch into the static
    tensors and replay. A graph reads and writes the tensors that existed at its capture, so
    a model whose parameters or gradients were replaced (not updated in place) is captured
    again. A step that cannot be captured runs as it would without a graph, with one warning.
    Returns what the step returns (a copy: the next replay overwrites the graph's own).
    """

    WARMUP = 3
    KEEP = 4  # graphs held at once (each holds its step's activations)

    def __init__(self, step: StepFn):
        self.step = step
        self.graphs: dict[tuple, _Captured] = {}
        self.broken = False

    def __call__(self, model: INR, coords: Tensor, values: Tensor, scale: float) -> Tensor:
        if self.broken or not coords.is_cuda:
            return self.step(model, coords, values, scale)
        ensure_grads(model)
        key = (tuple(coords.shape), tuple(values.shape), coords.dtype, values.dtype, float(scale))
        entry = self.graphs.get(key)
        if entry is None or entry.model is not model or entry.addresses != _addresses(model):
            self.graphs.pop(key, None)
            entry = self._capture(model, coords, values, scale)
            if entry is None:
                return self.step(model, coords, values, scale)
            while len(self.graphs) >= self.KEEP:
                self.graphs.pop(next(iter(self.graphs)))
            self.graphs[key] = entry
        entry.coords.copy_(coords)
        entry.values.copy_(values)
        entry.graph.replay()
        return entry.sse.clone()

    def _capture(self, model: INR, coords: Tensor, values: Tensor, scale: float) -> _Captured | None:
        params = list(model.parameters())
        grads, before = [p.grad for p in params], _addresses(model)
        saved = [g.clone() for g in grads]
        static_coords, static_values = coords.clone(), values.clone()
        stream = torch.cuda.current_stream(coords.device)
        side = torch.cuda.Stream(coords.device)
        side.wait_stream(stream)
        try:
            with torch.cuda.stream(side):
                for _ in range(self.WARMUP):
                    self.step(model, static_coords, static_values, scale)
            stream.wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                sse = self.step(model, static_coords, static_values, scale)
            if _addresses(model) != before:  # a replay would write where nobody reads
                raise RuntimeError("the step replaced a parameter or gradient tensor")
        except RuntimeError as exc:
            self.broken = True
            warnings.warn(f"the training step cannot be captured as a CUDA graph "
                          f"({str(exc).splitlines()[0][:200]}); it runs without one", stacklevel=3)
            return None
        finally:
            torch.cuda.synchronize(coords.device)
            for p, g, s in zip(params, grads, saved):
                p.grad = g.copy_(s)
        return _Captured(graph, model, _addresses(model), static_coords, static_values, sse)
