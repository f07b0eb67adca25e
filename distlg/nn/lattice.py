"""The global branch on a coarse lattice: evaluated where it is cheap, interpolated to samples.

What the partitions have in common is smooth at the partition scale, so the global branch need
not run at every sample. Each partition's un-grown box is cut into ``r_i`` cells per axis; the
global branch runs at the ``prod(r_i + 1)`` corners of those cells (K points per partition), and
its projected features are interpolated multilinearly to the partition's samples:

    U[p]   = [g_0 M_0, ..., g_L M_L, g_L Wo + bo]   at the K corner points of partition p
    Z(x)   = sum_k  w_k(x) U[p, k]                  (hat-function weights, sum_k w_k = 1)

so the per-sample cost of the shared part is one [n, K] x [K, C] product per partition instead
of a full-width MLP. Corner points on a border between two partitions are the same coordinates
in both, so the interpolated features are continuous across partition borders. Samples in a
training halo (outside the box) take the box's edge values (clamped), never another
partition's lattice, so a partition's output depends on its own corners alone.

Everything here is a function of the architecture and partition ids: which other partitions a
model holds never matters (crop and subset bit-identity rely on it). Nothing here knows about
distribution.
"""

from __future__ import annotations

import itertools
import math
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


def interp_weights(arch: Architecture, coords: Tensor, pids: Tensor) -> Tensor:
    """Multilinear weights [P, n, K] of each sample's corners in its partition's lattice.

    ``coords`` [P, n, d] are raw coordinates (before ``coord_scale``), grouped by ``pids``.
    Each axis contributes hat functions max(0, 1 - |t - k|) over its r_i + 1 corners, with t
    the sample's position in cells, clamped to the box; the weights are their outer product.
    """
    device = coords.device
    index = partition_index(arch, pids).to(device=device, dtype=coords.dtype)  # [P, d]
    # the geometry as numbers rounded to coords' precision, not as tensors copied to the device
    # (a CUDA graph can hold this function); the arithmetic is that of 0-d tensors
    real = np.float64 if coords.dtype == torch.float64 else np.float32
    weights = None
    for axis, r in enumerate(arch.lattice):
        size, origin = real(arch.part_size[axis]), real(arch.cell_origin[axis])
        start = index[:, axis:axis + 1] * float(size)
        local = coords[..., axis] - start.add_(float(origin))
        t = (local * float(real(1) / size * real(r))).clamp_(0, r)  # [P, n] in cells
        k = torch.arange(r + 1, dtype=coords.dtype, device=device)
        hat = (1 - (t.unsqueeze(-1) - k).abs()).clamp_(min=0)      # [P, n, r + 1]
        weights = hat if weights is None else \
            (weights.unsqueeze(-1) * hat.unsqueeze(-2)).flatten(-2)
    return weights


def default_lattice(part_shape: Sequence[int], samples_per_partition: int, local_width: int,
                    global_width: int, depths: int = 4, cell: int = 8) -> tuple[int, ...]:
    """Cells per partition per axis: about ``cell`` samples per cell, coarsened (largest
    count first) until (1) interpolating from the K = prod(r_i + 1) corners costs at most what
    the local layers do per sample (K <= 2 x local width), and (2) the global branch on the
    lattice (about prod(r_i) distinct points per partition) costs at most a quarter of what
    the local sub-networks do on the step's samples."""
    ndim = len(part_shape)
    cells = [max(1, round(p / cell)) for p in part_shape]
    w, g = local_width, global_width
    local_cost = samples_per_partition * (depths - 1) * w * w
    point_cost = (depths - 1) * g * g + depths * g * w
    points = max(1, int(0.25 * local_cost / max(point_cost, 1)))

    def too_dear(c) -> bool:
        return corner_count(c) > max(2 ** ndim, 2 * w) or math.prod(c) > points

    while too_dear(cells) and max(cells) > 1:
        axis = int(np.argmax(cells))
        cells[axis] = max(1, cells[axis] - max(1, cells[axis] // 4))
    return tuple(cells)
