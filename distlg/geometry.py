"""Partition geometry: how a signal's domain is cut into a grid of partitions.

A signal of shape (D_0, ..., D_{k-1}) is split along axis i into C_i equal parts of
``ceil(D_i / C_i)`` samples. When C_i does not divide D_i the grid covers a slightly larger,
*padded* extent; padded positions take the value of the nearest real sample ("edge" padding),
which is what clamping a position into the signal does.

Every partition owns an un-grown box (where it renders) and samples its training positions from
that box grown by a per-axis *halo* (overlap). At the borders the grown box shifts inward so it
keeps its size, as in the paper's code; every sampled position is clamped into the signal.

Coordinates are normalised per axis to [-1, 1] from the signal's own shape
(``-1 + 2 * i / (D_i - 1)``), so they do not depend on the partitioning: a coordinate means the
same point in every model of a signal. (An extended model keeps the extent it was first
trained on, so its new samples lie beyond 1.) Nothing here knows about torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .errors import DistlgError

Box = tuple[tuple[int, int], ...]
"""Per-axis half-open ranges ``((start, stop), ...)``."""


class GeometryError(DistlgError):
    """A partition grid that cannot be built for the given signal."""


def _tuple(values: Sequence[int] | int, ndim: int, name: str) -> tuple[int, ...]:
    if isinstance(values, (int, np.integer)):
        values = (int(values),) * ndim
    values = tuple(int(v) for v in values)
    if len(values) != ndim:
        raise GeometryError(f"{name} has {len(values)} entries but the signal has {ndim} axes")
    return values


@dataclass(frozen=True)
class PartitionGrid:
    """A grid of ``prod(factors)`` partitions over a signal of ``shape``.

    Partition ids are the C-order (row-major) ravel of the per-axis partition index.
    """

    shape: tuple[int, ...]
    """Signal extent per axis, in samples (frames, pixels, voxels, audio samples)."""
    factors: tuple[int, ...]
    """Number of partitions per axis (C_i)."""
    overlaps: tuple[int, ...] = ()
    """Halo per axis: a partition samples its training positions from its box grown by this."""
    extent: tuple[int, ...] = ()
    """Extent that coordinates normalise against (default: ``shape``). A model extended with
    new samples (appended frames) keeps its original extent, so old positions keep their
    coordinates and new ones continue beyond 1."""

    def __post_init__(self) -> None:
        shape = tuple(int(d) for d in self.shape)
        if not shape or any(d < 1 for d in shape):
            raise GeometryError(f"signal shape must be positive on every axis, got {shape}")
        factors = _tuple(self.factors, len(shape), "factors")
        overlaps = _tuple(self.overlaps or 0, len(shape), "overlaps")
        extent = _tuple(self.extent or shape, len(shape), "extent")
        if any(e < 1 for e in extent):
            raise GeometryError(f"coordinate extent must be positive, got {extent}")
        object.__setattr__(self, "extent", extent)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "factors", factors)
        object.__setattr__(self, "overlaps", overlaps)
        for axis, (d, c, o) in enumerate(zip(shape, factors, overlaps)):
            if c < 1:
                raise GeometryError(f"axis {axis}: partition factor must be >= 1, got {c}")
            if c > d:
                raise GeometryError(f"axis {axis}: {c} partitions for only {d} samples")
            part = math.ceil(d / c)
            if (c - 1) * part >= d:
                raise GeometryError(
                    f"axis {axis}: {c} partitions of {part} samples leave the last one empty "
                    f"for a size of {d}; choose a factor that splits {d} more evenly")
            if o < 0:
                raise GeometryError(f"axis {axis}: overlap must be >= 0, got {o}")
            if part + 2 * o > c * part:
                raise GeometryError(
                    f"axis {axis}: overlap {o} grows a {part}-sample partition beyond the signal")

    # -- sizes ---------------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def num_partitions(self) -> int:
        return math.prod(self.factors)

    @property
    def part_shape(self) -> tuple[int, ...]:
        """Size of every partition's un-grown box."""
        return tuple(math.ceil(d / c) for d, c in zip(self.shape, self.factors))

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Size of every partition's halo-grown sampling box."""
        return tuple(p + 2 * o for p, o in zip(self.part_shape, self.overlaps))

    @property
    def padded_shape(self) -> tuple[int, ...]:
        return tuple(p * c for p, c in zip(self.part_shape, self.factors))

    @property
    def padding(self) -> tuple[int, ...]:
        """Samples of edge padding at the far end of each axis."""
        return tuple(p - d for p, d in zip(self.padded_shape, self.shape))

    # -- ids, indices, boxes ---------------------------------------------------------------------
    def index(self, pid: int) -> tuple[int, ...]:
        """Per-axis partition index of partition ``pid``."""
        self._check_id(pid)
        return tuple(int(i) for i in np.unravel_index(pid, self.factors))

    def pid(self, index: Sequence[int]) -> int:
        """Flat id of the partition at per-axis ``index``."""
        index = _tuple(index, self.ndim, "index")
        if any(not 0 <= i < c for i, c in zip(index, self.factors)):
            raise GeometryError(f"partition index {index} outside grid {self.factors}")
        return int(np.ravel_multi_index(index, self.factors))

    def box(self, pid: int) -> Box:
        """Un-grown box of ``pid`` in padded space (where the partition renders)."""
        return tuple((i * p, (i + 1) * p) for i, p in zip(self.index(pid), self.part_shape))

    def valid_box(self, pid: int) -> Box:
        """Un-grown box clipped to the real signal (never empty)."""
        return tuple((a, min(b, d)) for (a, b), d in zip(self.box(pid), self.shape))

    def sample_starts(self, pids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Start corner of the sampling box of each id, as an int64 array [len(pids), ndim]."""
        pids = np.asarray(pids, dtype=np.int64)
        index = np.stack(np.unravel_index(pids, self.factors), axis=-1)
        part, over = np.asarray(self.part_shape), np.asarray(self.overlaps)
        start = index * part - over
        return np.clip(start, 0, np.asarray(self.padded_shape) - np.asarray(self.sample_shape))

    def intersecting(self, region: Box) -> list[int]:
        """Ids of the partitions whose un-grown boxes intersect ``region`` (signal units)."""
        ranges = []
        for (a, b), p in zip(region, self.part_shape):
            if b <= a:
                return []
            ranges.append(range(a // p, (b - 1) // p + 1))
        grids = np.meshgrid(*[np.asarray(r) for r in ranges], indexing="ij")
        return sorted(int(i) for i in np.ravel_multi_index(tuple(grids), self.factors).ravel())

    # -- coordinates -----------------------------------------------------------------------------
    def normalise(self, positions: np.ndarray) -> np.ndarray:
        """Map positions (integer or continuous, [..., ndim]) to coordinates: [-1, 1] over the
        grid's extent."""
        denom = np.maximum(np.asarray(self.extent, dtype=np.float64) - 1, 1)
        coords = np.asarray(positions, dtype=np.float64) * (2.0 / denom) - 1.0
        return coords.astype(np.float32)

    def clamp(self, positions: np.ndarray) -> np.ndarray:
        """Clamp positions into the signal: this is the grid's edge padding."""
        return np.minimum(positions, np.asarray(self.shape) - 1)

    def _check_id(self, pid: int) -> None:
        if not 0 <= pid < self.num_partitions:
            raise GeometryError(f"partition id {pid} outside 0..{self.num_partitions - 1}")


def auto_factors(shape: Sequence[int], target: Sequence[int] | int,
                 min_factor: int = 1, max_factor: int = 64) -> tuple[int, ...]:
    """Partition factors giving partitions of about ``target`` samples per axis.

    The paper's rule for images is 32x32-pixel partitions with factors clamped to a range;
    the factor of each axis is ``round(D_i / target_i)`` clamped to [min_factor, max_factor]
    and to the axis length, then lowered until no partition is left empty.
    """
    shape = tuple(int(d) for d in shape)
    target = _tuple(target, len(shape), "target partition size")
    factors = []
    for d, t in zip(shape, target):
        c = max(min_factor, min(max_factor, round(d / max(t, 1)), d))
        c = max(c, 1)
        while c > 1 and (c - 1) * math.ceil(d / c) >= d:
            c -= 1
        factors.append(c)
    return tuple(factors)


def block_shape(factors: Sequence[int], partitions: int) -> tuple[int, ...]:
    """A near-cubic block of at most ``partitions`` partitions (at least one) on a grid of
    ``factors``: every axis starts at 1 and the smallest one that can still grow doubles (capped
    at the axis), so a block is spatially compact and its sides are powers of two where the
    grid allows."""
    block = [1] * len(factors)
    while True:
        growable = [a for a in range(len(factors)) if block[a] < factors[a]]
        if not growable:
            return tuple(block)
        axis = min(growable, key=lambda a: (block[a], -a))
        grown = min(factors[axis], 2 * block[axis])
        if math.prod(block) // block[axis] * grown > partitions:
            return tuple(block)
        block[axis] = grown


def shard(grid: PartitionGrid, world_size: int, block: Sequence[int] | None = None) -> list[list[int]]:
    """Split the partitions into ``world_size`` balanced, spatially compact sets.

    Without ``block`` each worker gets a block of neighbouring partitions and the counts differ
    by at most one. With ``block`` (partitions per axis, ``block_shape``) every worker gets whole
    blocks, so that each block, a shard on disk, has one writer; the counts then differ by at
    most one block's. The sets come from recursive bisection: the current set of blocks is
    ordered along its longest axis and cut where the partitions of the workers on each side
    add up, so every worker gets a slab-like block and reads a compact region of the signal.
    """
    if world_size < 1:
        raise GeometryError(f"world size must be >= 1, got {world_size}")
    total = grid.num_partitions
    if world_size > total:
        raise GeometryError(f"{world_size} workers for only {total} partitions")
    block = _tuple(block or 1, grid.ndim, "block")
    blocks = tuple(math.ceil(c / b) for c, b in zip(grid.factors, block))
    index = np.stack(np.unravel_index(np.arange(math.prod(blocks)), blocks), axis=-1)
    sizes = np.prod(np.minimum(np.asarray(block), np.asarray(grid.factors) - index * np.asarray(block)),
                    axis=1)  # partitions in each block (edge blocks are smaller)
    if world_size > len(sizes):
        raise GeometryError(f"{world_size} workers for only {len(sizes)} blocks of {block} partitions")

    def split(ids: np.ndarray, counts: list[int]) -> list[np.ndarray]:
        if len(counts) == 1:
            return [ids]
        sub = index[ids]
        axis = int(np.argmax(sub.max(axis=0) - sub.min(axis=0)))
        keys = [sub[:, a] for a in reversed(range(grid.ndim)) if a != axis] + [sub[:, axis]]
        ordered = ids[np.lexsort(keys)]
        half = len(counts) // 2
        share, want = np.cumsum(sizes[ordered]), sum(counts[:half])
        cut = int(np.searchsorted(share, want))  # the first block that reaches the left's share
        if cut > 0 and want - share[cut - 1] <= share[min(cut, len(share) - 1)] - want:
            cut -= 1                             # stopping short of it is closer
        cut = min(max(cut + 1, half), len(ordered) - (len(counts) - half))
        return split(ordered[:cut], counts[:half]) + split(ordered[cut:], counts[half:])

    counts = [total // world_size + (1 if r < total % world_size else 0) for r in range(world_size)]
    return [_partitions_of(grid, block, blocks, ids) for ids in split(np.arange(len(sizes)), counts)]


def _partitions_of(grid: PartitionGrid, block: tuple[int, ...], blocks: tuple[int, ...],
                   ids: np.ndarray) -> list[int]:
    """Sorted ids of the partitions in blocks ``ids``."""
    if all(b == 1 for b in block):
        return sorted(int(i) for i in ids)
    out = []
    for b in ids:
        start = np.asarray(np.unravel_index(int(b), blocks)) * np.asarray(block)
        stop = np.minimum(start + np.asarray(block), np.asarray(grid.factors))
        mesh = np.meshgrid(*[np.arange(a, z) for a, z in zip(start, stop)], indexing="ij")
        out.append(np.ravel_multi_index(tuple(m.ravel() for m in mesh), grid.factors))
    return np.sort(np.concatenate(out)).tolist()
