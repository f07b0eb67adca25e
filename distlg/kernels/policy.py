"""The Triton matmul policy of ``INR.forward``: the local sub-networks' layers as the grouped
kernel of ``grouped_mlp`` (per-partition matmul, bias and sine in one launch forward, two
backward), the dense layers (global branch, merge) as torch's float32 or bfloat16 GEMMs."""

from __future__ import annotations

from torch import Tensor

from ..nn.layers import BF16, FP32, Matmuls
from .grouped_mlp import grouped_linear


class Triton(Matmuls):
    """Grouped products through Triton at ``precision`` ("fp32", "tf32", "bf16"; the sine, the
    bias and every accumulation in float32); dense ones as ``BF16`` or ``FP32``."""

    def __init__(self, precision: str = "fp32"):
        self.precision = precision
        self.name = f"triton-{precision}"
        self._dense = BF16 if precision == "bf16" else FP32

    def dense(self, x: Tensor, w: Tensor, b: Tensor, scale: float = 1.0) -> Tensor:
        return self._dense.dense(x, w, b, scale)

    def grouped(self, x: Tensor, w: Tensor, b: Tensor, scale: float = 1.0) -> Tensor:
        y = grouped_linear(x, w, b, 1.0, False, self.precision)
        return y if scale == 1.0 else y * scale

    def grouped_sine(self, x: Tensor, w: Tensor, b: Tensor, w0: float) -> Tensor:
        return grouped_linear(x, w, b, w0, True, self.precision)
