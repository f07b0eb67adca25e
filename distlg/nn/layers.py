"""The forward pass, written once (``forward_layers``), and how its products are computed.

Notation as in ``distlg.nn.model``. Per depth d the pass computes the global layer (where the
global branch runs at the samples), the local layer (one small product per partition, plus
the lattice's interpolated features under the lattice merge), and the merge; then the output
layer. Which of these exist is the ``Architecture``'s to say (``global_at_samples``,
``has_local``, ``merge_count``, ``on_lattice``); ``forward_layers`` asks it and nothing else.

Each layer is computed by a *policy* (``Matmuls``): how its product runs, what it keeps.

- ``FP32`` (the reference, also for TF32, a CUDA flag): torch's GEMMs in float32, w0 riding in
  their alpha/beta, so sin(w0 (x W + b)) costs no separate multiply;
- ``BF16``: bfloat16 matmul inputs, float32 results; biases, sines, the loss and the gradients'
  accumulation stay float32 (sin(w0 z) with w0 = 30 loses its phase in bfloat16);
- ``distlg.kernels.policy.Triton``: the local layers as Triton kernels with the sine fused
  (CUDA only), the dense ones as FP32 or BF16;
- ``distlg.nn.fused.Tape``: FP32's products with in-place sines, recording what the fused
  step's hand-derived backward reads.

An INCODE model's sine layers take exp(a) sin(exp(b) w0 z + c) + d with the (a, b, c, d) of
their set (``Activation``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .architecture import Architecture

Weights = Callable[[str], Tensor]
"""A pass's tensors by name (``INR.weights``): the shared ones whole, the local stacks
[P', ...] restricted to the pass's partitions."""


def incode_sine(z: Tensor, coefficients: Tensor, w0: float) -> Tensor:
    """INCODE's activation exp(a) sin(exp(b) w0 z + c) + d; ``coefficients`` = (a, b, c, d)."""
    a, b, c, d = coefficients.unbind(-1)
    return torch.exp(a) * torch.sin(torch.exp(b) * (w0 * z) + c) + d


class Activation:
    """The sine of one forward pass, given the pre-activation already scaled by w0 (w0 rides
    in the product): SIREN's sin(w0 z), or INCODE's with the coefficients of the layer's set,
    a layer's set being its name's first word ("local", "global", "merge"). With a = b = c = d
    = 0 INCODE's is SIREN's, bit for bit."""

    def __init__(self, arch: Architecture, coefficients: Tensor | None):
        self.w0, self.sets = arch.w0, arch.coefficient_sets
        self.coefficients = coefficients

    def __call__(self, scaled: Tensor, layer: str) -> Tensor:
        if not self.sets:
            return torch.sin(scaled)
        row = self.sets.index(layer.split(".")[0])
        return incode_sine(scaled, self.coefficients[row], 1.0)


def forward_layers(arch: Architecture, weights: Weights, x: Tensor, matmuls: Matmuls,
                   act: Activation, lattice: Tensor | None = None) -> Tensor:
    """Values [P, n, out] at scaled coordinates ``x`` [P, n, in] grouped by partition.

    ``lattice`` [P, n, C]: the lattice merge's global features interpolated to the samples
    (C = depths x local width + outputs), added inside each local layer and to the output."""
    a, width = arch, arch.local_width
    groups, n = x.shape[0], x.shape[1]
    g, h = x.reshape(groups * n, a.in_dims), x
    for d in range(a.depths):
        if a.global_at_samples:
            g = matmuls.sine(f"global.{d}", g, weights, act)
        if a.has_local:
            extra = None if lattice is None else lattice[..., d * width:(d + 1) * width]
            l = matmuls.sine(f"local.{d}", h, weights, act, extra)
            h = matmuls.merge(a.merge_layer(d), l, g, weights, act, a.merge == "add") \
                if a.merge_count else l
    if not a.has_local:
        return matmuls.linear("out", g, weights).view(groups, n, a.out_dims)
    out = matmuls.linear("local.out", h, weights)
    return out if lattice is None else out + lattice[..., a.depths * width:]


class Matmuls:
    """The FP32 policy: every product a float32 torch GEMM, a scale riding in alpha/beta.

    Dense products take x [rows, in] and W [in, out]; grouped ones x [P, n, in] and W [P, in,
    out] (one per partition, the local layers). Subclasses change ``dense``, ``grouped`` and
    ``grouped_sine``; the layers (``sine``, ``merge``, ``linear``) are built from them."""

    name = "fp32"

    def dense(self, x: Tensor, w: Tensor, b: Tensor, scale: float = 1.0) -> Tensor:
        """scale (x W + b)."""
        return torch.addmm(b, x, w, beta=scale, alpha=scale)

    def grouped(self, x: Tensor, w: Tensor, b: Tensor, scale: float = 1.0) -> Tensor:
        """scale (x W[p] + b[p]) for every partition p."""
        return torch.baddbmm(b.unsqueeze(1), x, w, beta=scale, alpha=scale)

    def grouped_sine(self, x: Tensor, w: Tensor, b: Tensor, w0: float) -> Tensor:
        """sin(w0 (x W[p] + b[p])): a Triton kernel fuses it."""
        return torch.sin(self.grouped(x, w, b, w0))

    def sine(self, name: str, x: Tensor, weights: Weights, act: Activation,
             extra: Tensor | None = None) -> Tensor:
        """The sine layer ``name``: the activation of w0 (x W + b + extra), dense or grouped as
        ``x`` is."""
        w, b = weights(f"{name}.weight"), weights(f"{name}.bias")
        grouped = x.dim() == 3
        if extra is None and grouped and not act.sets:
            return self.grouped_sine(x, w, b, act.w0)
        z = (self.grouped if grouped else self.dense)(x, w, b, act.w0)
        return act(z if extra is None else z.add(extra, alpha=act.w0), name)

    def merge(self, name: str, l: Tensor, g: Tensor, weights: Weights, act: Activation,
              add: bool) -> Tensor:
        """Merge ``name`` of local features l [P, n, h] and global g [P n, G]: the sine of
        [l, g] Wm + bm, or with ``add`` l plus the sine of g Wm + bm."""
        shape = l.shape
        if add:
            return l + self.sine(name, g, weights, act).view(shape)
        lg = torch.cat([l.reshape(g.shape[0], shape[-1]), g], dim=1)
        return self.sine(name, lg, weights, act).view(shape)

    def linear(self, name: str, x: Tensor, weights: Weights) -> Tensor:
        """The output layer ``name``: x W + b."""
        w, b = weights(f"{name}.weight"), weights(f"{name}.bias")
        return (self.grouped if x.dim() == 3 else self.dense)(x, w, b)


def _bf16(t: Tensor) -> Tensor:
    return t.to(torch.bfloat16)


class BF16Matmuls(Matmuls):
    """Matmul inputs rounded to bfloat16, float32 results; bias and scale added in float32."""

    name = "bf16"

    def dense(self, x: Tensor, w: Tensor, b: Tensor, scale: float = 1.0) -> Tensor:
        return (_bf16(x) @ _bf16(w)).float().add_(b).mul_(scale)

    def grouped(self, x: Tensor, w: Tensor, b: Tensor, scale: float = 1.0) -> Tensor:
        return torch.bmm(_bf16(x), _bf16(w)).float().add_(b.unsqueeze(1)).mul_(scale)


FP32 = Matmuls()
BF16 = BF16Matmuls()
