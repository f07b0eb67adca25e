"""A Triton kernel for the local sub-networks' layers: per-partition matmul, bias and sine fused.

One layer of every partition at once, ``x`` [P, n, K], ``W`` [P, K, M], ``b`` [P, M]:

    sine layer     y = sin(w0 (x W[p] + b[p]))         (the pre-activation z is kept for backward)
    linear layer   y = x W[p] + b[p]

Forward is one launch (matmul, bias, w0 and sine in registers; z and y written once). Backward
is two: dL/dx = c W^T and dL/dW = x^T c with dL/db = sum_n c, where c = w0 cos(z) dL/dy is
recomputed from z in each, never stored. Blocks of 16+ rows/columns are masked at the edges, so
any n, K and M work (K = 3 for the first layer).

``grouped_linear`` is the autograd function; ``torch_grouped_linear`` the torch reference it is
tested against (through ``TRITON_INTERPRET=1`` on a CPU). ``precision`` picks the matmul inputs:
"fp32" (IEEE), "tf32", or "bf16" (inputs rounded to bfloat16, float32 accumulation; GPU only).
The sine, the bias and every accumulation stay in float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

BLOCK_N, BLOCK_M, BLOCK_K = 64, 32, 32
"""Samples, output and input columns per program (Triton's dot needs 16 or more of each)."""


@triton.jit
def _dot(a, b, PREC: tl.constexpr):
    if PREC == "bf16":
        out = tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16))
    elif PREC == "tf32":
        out = tl.dot(a, b, input_precision="tf32")
    else:
        out = tl.dot(a, b, input_precision="ieee")
    return out


@triton.jit
def _forward_kernel(x_ptr, w_ptr, b_ptr, z_ptr, y_ptr, n, K, M, w0,
                    SINE: tl.constexpr, PREC: tl.constexpr,
                    BN: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr):
    p, i, j = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rows = i * BN + tl.arange(0, BN)
    cols = j * BM + tl.arange(0, BM)
    ks = tl.arange(0, BK)
    x_base, w_base = x_ptr + p * n * K, w_ptr + p * K * M
    acc = tl.zeros((BN, BM), dtype=tl.float32)
    for k0 in range(0, K, BK):
        kk = k0 + ks
        x = tl.load(x_base + rows[:, None] * K + kk[None, :],
                    mask=(rows[:, None] < n) & (kk[None, :] < K), other=0.0)
        w = tl.load(w_base + kk[:, None] * M + cols[None, :],
                    mask=(kk[:, None] < K) & (cols[None, :] < M), other=0.0)
        acc += _dot(x, w, PREC)
    bias = tl.load(b_ptr + p * M + cols, mask=cols < M, other=0.0)
    out = acc + bias[None, :]
    where = p * n * M + rows[:, None] * M + cols[None, :]
    mask = (rows[:, None] < n) & (cols[None, :] < M)
    if SINE:
        z = w0 * out
        tl.store(z_ptr + where, z, mask=mask)
        tl.store(y_ptr + where, tl.sin(z), mask=mask)
    else:
        tl.store(y_ptr + where, out, mask=mask)


@triton.jit
def _chain(z_ptr, dy_ptr, where, mask, w0, SINE: tl.constexpr):
    """c = dL/d(xW + b): w0 cos(z) dy for a sine layer, dy for a linear one."""
    c = tl.load(dy_ptr + where, mask=mask, other=0.0)
    if SINE:
        z = tl.load(z_ptr + where, mask=mask, other=0.0)
        c = w0 * tl.cos(z) * c
    return c


@triton.jit
def _grad_input_kernel(z_ptr, dy_ptr, w_ptr, dx_ptr, n, K, M, w0,
                       SINE: tl.constexpr, PREC: tl.constexpr,
                       BN: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr):
    p, i, j = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rows = i * BN + tl.arange(0, BN)
    kk = j * BK + tl.arange(0, BK)
    ms = tl.arange(0, BM)
    acc = tl.zeros((BN, BK), dtype=tl.float32)
    for m0 in range(0, M, BM):
        cols = m0 + ms
        mask = (rows[:, None] < n) & (cols[None, :] < M)
        c = _chain(z_ptr, dy_ptr, p * n * M + rows[:, None] * M + cols[None, :], mask, w0, SINE)
        wt = tl.load(w_ptr + p * K * M + kk[None, :] * M + cols[:, None],  # W^T block [BM, BK]
                     mask=(kk[None, :] < K) & (cols[:, None] < M), other=0.0)
        acc += _dot(c, wt, PREC)
    tl.store(dx_ptr + p * n * K + rows[:, None] * K + kk[None, :], acc,
             mask=(rows[:, None] < n) & (kk[None, :] < K))


@triton.jit
def _grad_weight_kernel(x_ptr, z_ptr, dy_ptr, dw_ptr, db_ptr, n, K, M, w0,
                        SINE: tl.constexpr, PREC: tl.constexpr,
                        BN: tl.constexpr, BM: tl.constexpr, BK: tl.constexpr):
    p, i, j = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    kk = i * BK + tl.arange(0, BK)
    cols = j * BM + tl.arange(0, BM)
    ns = tl.arange(0, BN)
    acc = tl.zeros((BK, BM), dtype=tl.float32)
    bias = tl.zeros((BM,), dtype=tl.float32)
    for n0 in range(0, n, BN):
        rows = n0 + ns
        mask = (rows[:, None] < n) & (cols[None, :] < M)
        c = _chain(z_ptr, dy_ptr, p * n * M + rows[:, None] * M + cols[None, :], mask, w0, SINE)
        xt = tl.load(x_ptr + p * n * K + rows[None, :] * K + kk[:, None],  # x^T block [BK, BN]
                     mask=(rows[None, :] < n) & (kk[:, None] < K), other=0.0)
        acc += _dot(xt, c, PREC)
        bias += tl.sum(c, axis=0)
    tl.store(dw_ptr + p * K * M + kk[:, None] * M + cols[None, :], acc,
             mask=(kk[:, None] < K) & (cols[None, :] < M))
    if i == 0:
        tl.store(db_ptr + p * M + cols, bias, mask=cols < M)


def _grid(p: int, a: int, ba: int, b: int, bb: int) -> tuple[int, int, int]:
    return (p, triton.cdiv(a, ba), triton.cdiv(b, bb))


class _GroupedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Tensor, w0: float, sine: bool, precision: str):
        x, w, b = x.contiguous(), w.contiguous(), b.contiguous()
        p, n, k = x.shape
        m = w.shape[2]
        y = torch.empty((p, n, m), device=x.device, dtype=torch.float32)
        z = torch.empty_like(y) if sine else y
        _forward_kernel[_grid(p, n, BLOCK_N, m, BLOCK_M)](
            x, w, b, z, y, n, k, m, float(w0), SINE=sine, PREC=precision,
            BN=BLOCK_N, BM=BLOCK_M, BK=BLOCK_K)
        ctx.save_for_backward(x, w, z if sine else None)
        ctx.w0, ctx.sine, ctx.precision = float(w0), sine, precision
        return y

    @staticmethod
    def backward(ctx, dy: Tensor):
        x, w, z = ctx.saved_tensors
        dy = dy.contiguous()
        z = z if z is not None else dy  # a linear layer reads no z: any valid pointer will do
        p, n, k = x.shape
        m = w.shape[2]
        meta = dict(SINE=ctx.sine, PREC=ctx.precision, BN=BLOCK_N, BM=BLOCK_M, BK=BLOCK_K)
        dx = dw = db = None
        if ctx.needs_input_grad[0]:
            dx = torch.empty_like(x)
            _grad_input_kernel[_grid(p, n, BLOCK_N, k, BLOCK_K)](
                z, dy, w, dx, n, k, m, ctx.w0, **meta)
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            dw, db = torch.empty_like(w), torch.empty((p, m), device=w.device, dtype=w.dtype)
            _grad_weight_kernel[_grid(p, k, BLOCK_K, m, BLOCK_M)](
                x, z, dy, dw, db, n, k, m, ctx.w0, **meta)
        return dx, dw, db, None, None, None


def grouped_linear(x: Tensor, w: Tensor, b: Tensor, w0: float = 1.0, sine: bool = True,
                   precision: str = "fp32") -> Tensor:
    """sin(w0 (x W + b)) per partition (``sine``), or x W + b; float32 [P, n, M]."""
    return _GroupedLinear.apply(x, w, b, w0, sine, precision)


def torch_grouped_linear(x: Tensor, w: Tensor, b: Tensor, w0: float = 1.0,
                         sine: bool = True) -> Tensor:
    """The reference: what ``grouped_linear`` computes, in torch."""
    out = torch.baddbmm(b.unsqueeze(1), x, w)
    return torch.sin(w0 * out) if sine else out
