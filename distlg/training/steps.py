"""Which training step runs, and CUDA graphs.

- ``fp32`` / ``tf32`` with the torch kernel: ``distlg.nn.fused.forward_backward`` (the default;
  tf32 lets CUDA's float32 matmuls use TF32 tensor cores, a no-op on the CPU);
- ``bf16``, or the ``triton`` kernel: ``autograd_forward_backward`` below, the model's forward
  (``INR.forward``) under autograd with the matmul policy of the precision and kernel
  (``matmuls``: ``distlg.nn.layers``' BF16, or ``distlg.kernels.policy.Triton``).

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
from typing import Callable

import torch
from torch import Tensor

from ..defaults import KERNELS, PRECISIONS
from ..errors import DistlgError
from ..nn import fused
from ..nn.layers import BF16, FP32, Matmuls
from ..nn.model import INR


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
    policy = matmuls(precision, kernel)

    def step(model: INR, coords: Tensor, values: Tensor, scale: float) -> Tensor:
        return autograd_forward_backward(model, coords, values, scale, policy, coefficients)

    return step


def matmuls(precision: str = "fp32", kernel: str = "torch") -> Matmuls:
    """The forward's matmul policy for ``precision`` and ``kernel`` (``distlg.nn.layers``)."""
    if kernel == "triton":
        from ..kernels.policy import Triton

        return Triton(precision)
    return BF16 if precision == "bf16" else FP32


def ensure_grads(model: INR) -> None:
    """A zero ``.grad`` for every parameter that has none (the replicated ones already have
    theirs: views into the all-reduce bucket), for the backward pass to add to."""
    for p in model.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)


def autograd_forward_backward(model: INR, coords: Tensor, values: Tensor, scale: float,
                              policy: Matmuls = FP32,
                              coefficients: Callable[[], Tensor] | None = None) -> Tensor:
    """Add the gradient of ``scale * sse`` to every ``.grad`` (in place); return sse.
    ``policy``: the forward's matmuls (``matmuls``); ``coefficients``: computes an INCODE
    model's coefficients (their gradient flows back into whatever computed them); default: the
    model's stored ones."""
    ensure_grads(model)
    with torch.enable_grad():
        c = coefficients() if coefficients is not None else None
        out = model(coords, coefficients=c, matmuls=policy)
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
