"""The global branch on a coarse lattice: evaluated where it is cheap, interpolated to samples.

What the partitions have in common is smooth at the partition scale, so the global branch need
not run at every sample. Each partition's un-grown box is cut into ``r_i`` cells per axis; the
global branch runs at the ``prod(r_i + 1)`` corners of those cells (K points per partition), and
its projected features are interpolated multilinearly to the partition's samples:

    U[p]   = [g_0 M_0, ..., g_L M_L, g_L Wo + bo]   at the K corner points of partition p
    Z(x)   = sum_k  w_k(x) U[p, k]                  (hat-function weights, sum_k w_k = 1)

so the per-sample cost of the shared part is an interpolation per partition instead of a
full-width MLP. Two ways, the same numbers (``interpolation``): on a coarse lattice a dense
[n, K] x [K, C] product (one GEMM: the fastest way to touch few corners on a CPU); on a fine one
(K > ``SPARSE_FROM`` x 2^d) each sample gathers only the 2^d corners of its cell
(``cell_corners``), so the cost per sample stops growing with K and the lattice can be as fine
as the global branch's cost per step allows. Corner points on a border between two partitions
are the same coordinates in both, so the interpolated features are continuous across partition
borders. Samples in a training halo (outside the box) take the box's edge values (clamped),
never another partition's lattice, so a partition's output depends on its own corners alone.

Everything here is a function of the architecture and partition ids: which other partitions a
model holds never matters (crop and subset bit-identity rely on it). Nothing here knows about
distribution.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import torch
from torch import Tensor


class Architecture(Protocol):
    """What the lattice reads of ``distlg.nn.model.Architecture``."""

    lattice: tuple[int, ...]
    grid_factors: tuple[int, ...]
    cell_origin: tuple[float, ...]
    part_size: tuple[float, ...]


def partition_index(arch: Architecture, pids: Tensor) -> Tensor:
    """Per-axis grid index [P, d] (int64) of each partition id.

    Ids are the C-order ravel over ``arch.grid_factors``; the first axis is left unbounded so
    that an extended model (partitions appended along axis 0) keeps its ids."""
    factors = arch.grid_factors
    index, rest = [], pids.to(torch.long)
    for f in reversed(factors[1:]):
        index.append(rest % f)
        rest = rest // f
    index.append(rest)
    return torch.stack(index[::-1], dim=-1)


def corner_offsets(lattice: Sequence[int]) -> Tensor:
    """The K = prod(r_i + 1) corner offsets of a partition's cells, C order: int64 [K, d]."""
    return torch.tensor(list(itertools.product(*[range(r + 1) for r in lattice])),
                        dtype=torch.long).reshape(-1, len(lattice))


def corner_count(lattice: Sequence[int]) -> int:
    return math.prod(r + 1 for r in lattice)


def lattice_points(arch: Architecture, pids: Tensor) -> Tensor:
    """Coordinates [P, K, d] (float32, before ``coord_scale``) of each partition's corners."""
    return _coordinates(arch, corner_indices(arch, pids))


def corner_indices(arch: Architecture, pids: Tensor) -> Tensor:
    """Integer lattice index [P, K, d] of each partition's corners: neighbours share theirs."""
    index = partition_index(arch, pids)                                 # [P, d]
    cells = torch.tensor(arch.lattice, dtype=torch.long)
    return (index * cells).unsqueeze(1) + corner_offsets(arch.lattice).unsqueeze(0)


def unique_points(arch: Architecture, pids: Tensor) -> tuple[Tensor, Tensor]:
    """The distinct corner points of ``pids`` (float32 coordinates [M, d]) and, for each of
    the P x K corners, its row among them [P * K]: a corner shared by neighbouring
    partitions is evaluated once (in 3-D about 8x fewer points than corners at r = 1)."""
    corners = corner_indices(arch, pids).reshape(-1, len(arch.lattice)).to(torch.int64)
    if not len(corners):
        return _coordinates(arch, corners), torch.zeros(0, dtype=torch.int64)
    # one integer per corner (C order over the lattice's extent): a 1-D unique, in the same
    # (lexicographic) order as the rows' unique, ~20x faster at 10^5 partitions
    extent = corners.max(0).values + 1
    strides = torch.cumprod(torch.cat([extent.flip(0)[:-1].new_ones(1), extent.flip(0)[:-1]]), 0).flip(0)
    keys, inverse = torch.unique(corners @ strides, return_inverse=True)
    distinct = torch.stack([(keys // s) % e for s, e in zip(strides.tolist(), extent.tolist())], -1)
    return _coordinates(arch, distinct), inverse


def _coordinates(arch: Architecture, index: Tensor) -> Tensor:
    cells = torch.tensor(arch.lattice, dtype=torch.float64)
    size = torch.tensor(arch.part_size, dtype=torch.float64)
    origin = torch.tensor(arch.cell_origin, dtype=torch.float64)
    return (origin + index.to(torch.float64) / cells * size).to(torch.float32)


SPARSE_FROM = 16
"""A lattice with more than ``SPARSE_FROM`` x 2^d corners per partition is interpolated by
gathering each sample's 2^d cell corners; below, by a dense product. Measured on one CPU
thread (distlg's widths, per sample, forward and backward): a gather of 2 corners (1-D) cost
what a dense product over ~30 corners does, of 8 (3-D) what one over ~100 does."""


def is_sparse(lattice: Sequence[int]) -> bool:
    """Whether a lattice of ``lattice`` cells is interpolated by gathering (``SPARSE_FROM``)."""
    return corner_count(lattice) > SPARSE_FROM * 2 ** len(lattice)


@dataclass
class Interpolation:
    """How a batch's samples read their partitions' lattices: ``weights`` [P, n, K] of every
    corner (``rows`` None: dense), or [P, n, 2^d] of the corners of each sample's cell, whose
    rows in the partitions' corners flattened to [P * K] are ``rows`` [P, n, 2^d] (sparse)."""

    weights: Tensor
    rows: Tensor | None = None


def interpolation(arch: Architecture, coords: Tensor, pids: Tensor) -> Interpolation:
    """The interpolation of ``coords`` [P, n, d] (raw, before ``coord_scale``, grouped by
    ``pids``) in their partitions' lattices: dense or sparse as ``is_sparse`` says."""
    if not is_sparse(arch.lattice):
        return Interpolation(interp_weights(arch, coords, pids))
    rows, weights = cell_corners(arch, coords, pids)
    offset = torch.arange(rows.shape[0], device=rows.device) * corner_count(arch.lattice)
    return Interpolation(weights, rows + offset.view(-1, 1, 1))


def interpolate(features: Tensor, how: Interpolation) -> Tensor:
    """Features [P, K, C] at the samples, [P, n, C], differentiable (the reference of
    ``distlg.nn.fused``'s hand-written version)."""
    if how.rows is None:
        return torch.bmm(how.weights, features)
    P, K, C = features.shape
    picked = features.reshape(P * K, C).index_select(0, how.rows.flatten())
    return (picked.view(*how.rows.shape, C) * how.weights.unsqueeze(-1)).sum(-2)


def _cell_positions(arch: Architecture, coords: Tensor, pids: Tensor):
    """Per axis: (r, t), t [P, n] the samples' positions in cells, clamped to their box."""
    index = partition_index(arch, pids).to(device=coords.device, dtype=coords.dtype)  # [P, d]
    # the geometry as numbers rounded to coords' precision, not as tensors copied to the device
    # (a CUDA graph can hold this function); the arithmetic is that of 0-d tensors
    real = np.float64 if coords.dtype == torch.float64 else np.float32
    for axis, r in enumerate(arch.lattice):
        size, origin = real(arch.part_size[axis]), real(arch.cell_origin[axis])
        start = index[:, axis:axis + 1] * float(size)
        local = coords[..., axis] - start.add_(float(origin))
        yield r, (local * float(real(1) / size * real(r))).clamp_(0, r)


def interp_weights(arch: Architecture, coords: Tensor, pids: Tensor) -> Tensor:
    """Multilinear weights [P, n, K] of each sample's corners in its partition's lattice.

    ``coords`` [P, n, d] are raw coordinates (before ``coord_scale``), grouped by ``pids``.
    Each axis contributes hat functions max(0, 1 - |t - k|) over its r_i + 1 corners, with t
    the sample's position in cells, clamped to the box; the weights are their outer product.
    """
    weights = None
    for r, t in _cell_positions(arch, coords, pids):
        k = torch.arange(r + 1, dtype=coords.dtype, device=coords.device)
        hat = (1 - (t.unsqueeze(-1) - k).abs()).clamp_(min=0)      # [P, n, r + 1]
        weights = hat if weights is None else \
            (weights.unsqueeze(-1) * hat.unsqueeze(-2)).flatten(-2)
    return weights


def cell_corners(arch: Architecture, coords: Tensor, pids: Tensor) -> tuple[Tensor, Tensor]:
    """The 2^d corners of each sample's cell: their rows among its partition's K corners (int64
    [P, n, 2^d], C order as ``corner_offsets``) and their multilinear weights [P, n, 2^d]: the
    nonzero entries of ``interp_weights`` (a sample on a cell's upper face, t = r, belongs to
    the last cell with weight 1 on its upper corner)."""
    rows = weights = None
    stride = corner_count(arch.lattice)
    for r, t in _cell_positions(arch, coords, pids):
        stride //= r + 1
        cell = t.floor().clamp_(max=r - 1)                                 # [P, n]
        frac = t - cell
        axis_rows = (cell.to(torch.long) * stride).unsqueeze(-1) + \
            torch.arange(0, 2 * stride, stride, device=coords.device)      # [P, n, 2]
        axis_weights = torch.stack([1 - frac, frac], dim=-1)
        if rows is None:
            rows, weights = axis_rows, axis_weights
        else:
            rows = (rows.unsqueeze(-1) + axis_rows.unsqueeze(-2)).flatten(-2)
            weights = (weights.unsqueeze(-1) * axis_weights.unsqueeze(-2)).flatten(-2)
    return rows, weights


GLOBAL_COST = 1.0
"""The global branch on the lattice may cost up to this times what the local sub-networks do
on a step's samples (in multiply-adds). At 0.25 a clip sampled at 5 % per step got 30 cells
per partition; at 1, 128: bach at 250 steps 27.2 -> 28.6 dB (the paper's formulation: 29.6),
its step 1.8x per-partition's with the gather (benchmarks/results/recipe.md)."""


def default_lattice(part_shape: Sequence[int], samples_per_partition: int, local_width: int,
                    global_width: int, depths: int = 4, cell: int = 8) -> tuple[int, ...]:
    """Cells per partition per axis: about ``cell`` samples per cell, coarsened (largest
    count first) until (1) interpolating costs at most what the local layers do per sample:
    it reads at most 2 x local width corners (a dense product reads all K, a gather the 2^d of
    the sample's cell at about the cost of a dense product over ``SPARSE_FROM`` x 2^d), and
    (2) the global branch on the lattice (about prod(r_i) distinct points per partition) costs
    at most ``GLOBAL_COST`` x what the local sub-networks do on the step's samples."""
    ndim = len(part_shape)
    cells = [max(1, round(p / cell)) for p in part_shape]
    w, g = local_width, global_width
    local_cost = samples_per_partition * (depths - 1) * w * w
    point_cost = (depths - 1) * g * g + depths * g * w
    points = max(1, int(GLOBAL_COST * local_cost / max(point_cost, 1)))

    def reads(c) -> int:
        return SPARSE_FROM * 2 ** ndim if is_sparse(c) else corner_count(c)

    def too_dear(c) -> bool:
        return reads(c) > max(2 ** ndim, 2 * w) or math.prod(c) > points

    while too_dear(cells) and max(cells) > 1:
        axis = int(np.argmax(cells))
        cells[axis] = max(1, cells[axis] - max(1, cells[axis] // 4))
    return tuple(cells)
