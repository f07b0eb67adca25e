"""Regions of a signal as users write them, the grid a render samples (``RenderGrid``), and the
small types a render hands on (``Slab``, ``RenderError``): what writers need, without the
evaluator.

A BOX is ``START:STOP`` per axis in signal units (frames, pixels, voxels, samples), comma
separated, in the signal's axis order: ``0:50,100:228,0:256``. Either end may be left out
(``:50``, ``100:``, ``:``) and trailing axes may be omitted; both mean the whole axis. Axes may
instead be named, in any order, the rest taken whole: ``t=0:50`` or ``y=100:228,x=0:128``.

Partition ids are written as lists and ranges (``3,5,10-12``); ``--drop-along`` takes
``AXIS=INDICES`` with the axis given by name or number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import DistlgError
from ..geometry import Box, PartitionGrid


class RegionError(DistlgError):
    """A region, id list or scale that is malformed or does not fit the signal."""


def _axis(name: str, axes: Sequence[str]) -> int:
    name = name.strip()
    if name in axes:
        return list(axes).index(name)
    if name.isdigit() and int(name) < len(axes):
        return int(name)
    raise RegionError(f"unknown axis {name!r}; this signal's axes are {', '.join(axes)} "
                      f"(or 0..{len(axes) - 1})")


def _range(text: str, size: int, axis: str) -> tuple[int, int]:
    start, sep, stop = text.partition(":")
    if not sep:
        raise RegionError(f"axis {axis}: expected START:STOP, got {text!r}")
    try:
        a = int(start) if start.strip() else 0
        b = int(stop) if stop.strip() else size
    except ValueError:
        raise RegionError(f"axis {axis}: START and STOP must be integers, got {text!r}") from None
    if a < 0 or b > size:
        raise RegionError(f"axis {axis}: {a}:{b} lies outside the signal (0:{size})")
    if b <= a:
        raise RegionError(f"axis {axis}: {a}:{b} is empty")
    return a, b


def parse_box(text: str | None, shape: Sequence[int], axes: Sequence[str]) -> Box:
    """The box ``text`` describes inside a signal of ``shape``; the whole signal if None.

    Raises ``RegionError`` for a malformed, out-of-bounds or empty box, or one that names an
    axis twice (by name or number).
    """
    ranges = [f"0:{d}" for d in shape]
    if text is not None:
        items = [s.strip() for s in text.split(",")]
        if all("=" in s for s in items):
            named: set[int] = set()
            for item in items:
                name, _, rng = item.partition("=")
                axis = _axis(name, axes)
                if axis in named:
                    raise RegionError(f"axis {axes[axis]} is given twice in {text!r}")
                named.add(axis)
                ranges[axis] = rng
        elif any("=" in s for s in items):
            raise RegionError(f"name every axis or none in {text!r}")
        elif len(items) > len(shape):
            raise RegionError(f"{text!r} has {len(items)} ranges for a signal with {len(shape)} "
                              f"axes ({', '.join(axes)})")
        else:
            ranges[:len(items)] = items
    return tuple(_range(r, d, a) for r, d, a in zip(ranges, shape, axes))


def parse_ids(text: str, limit: int | None = None) -> list[int]:
    """``3,5,10-12`` -> [3, 5, 10, 11, 12]; with ``limit``, ids must lie below it (checked
    before a range is expanded, so a huge range is one line, not a MemoryError)."""
    out: list[int] = []
    for item in text.split(","):
        a, sep, b = item.strip().partition("-")
        try:
            lo, hi = int(a), int(b if sep else a)
        except ValueError:
            raise RegionError(f"expected ids like 3,5,10-12, got {text!r}") from None
        if lo < 0 or hi < lo:
            raise RegionError(f"bad id range {item.strip()!r} in {text!r}")
        if limit is not None and hi >= limit:
            raise RegionError(f"{item.strip()!r} in {text!r} goes past the last id, {limit - 1}")
        out.extend(range(lo, hi + 1))
    return sorted(set(out))


def parse_along(text: str, axes: Sequence[str], factors: Sequence[int] | None = None
                ) -> tuple[int, list[int]]:
    """``t=0,3-4`` -> (axis, partition indices along it); with ``factors`` (partitions per
    axis) the indices must exist."""
    name, sep, ids = text.partition("=")
    if not sep:
        raise RegionError(f"expected AXIS=INDICES like t=0,3-4, got {text!r}")
    axis = _axis(name, axes)
    return axis, parse_ids(ids, None if factors is None else factors[axis])


def parse_scale(text: str, ndim: int) -> tuple[float, ...]:
    """One positive factor for every axis, or one per axis (``2`` or ``1,2,2``)."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise RegionError(f"scale must be numbers like 2 or 1,2,2, got {text!r}") from None
    if len(values) == 1:
        values = values * ndim
    if len(values) != ndim or not all(math.isfinite(v) and v > 0 for v in values):
        raise RegionError(f"scale needs 1 or {ndim} positive values, got {text!r}")
    return values


def box_text(box: Box) -> str:
    """The BOX syntax for ``box``: ``0:50,100:228``."""
    return ",".join(f"{a}:{b}" for a, b in box)


def bounding_box(grid: PartitionGrid, pids: Sequence[int]) -> Box | None:
    """Smallest box holding the (signal-clipped) boxes of ``pids``; None if there are none."""
    if not len(pids):
        return None
    index = np.stack(np.unravel_index(np.asarray(pids, dtype=np.int64), grid.factors), -1)
    part, shape = np.asarray(grid.part_shape), np.asarray(grid.shape)
    lo, hi = index.min(0) * part, np.minimum((index.max(0) + 1) * part, shape)
    return tuple((int(a), int(b)) for a, b in zip(lo, hi))


class RenderError(DistlgError):
    """A region that this model cannot render as asked."""


@dataclass
class Slab:
    """Rows ``start:start + len(values)`` along the first axis of a region's render."""

    start: int
    values: np.ndarray
    """float32 [rows, *sizes of the other axes, channels], normalised to [-1, 1]."""


RUN_BLOCK = 1 << 20
"""Samples of one axis whose owners ``RenderGrid.runs`` computes at once."""


@dataclass(frozen=True)
class RenderGrid:
    """Where a render evaluates a region: ``round(size * scale)`` samples per axis.

    Sample k of an axis sits at position ``start - 1/2 + (k + 1/2) * size / n``: the samples
    tile the region's footprint ``[start - 1/2, stop - 1/2)`` evenly, so scale 1 gives exactly the
    integer positions, and renders of adjacent regions at one scale fit together. A continuous
    position x belongs to the partition whose box holds the sample nearest to it,
    ``floor((x + 1/2) / part)``.
    """

    region: Box
    scale: tuple[float, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(max(1, round((b - a) * s)) for (a, b), s in zip(self.region, self.scale))

    def positions(self, axis: int, start: int = 0, stop: int | None = None) -> np.ndarray:
        """float64 positions of samples ``start:stop`` (default: all) along ``axis``."""
        (a, b), n = self.region[axis], self.shape[axis]
        k = np.arange(start, n if stop is None else stop)
        return a - 0.5 + (k + 0.5) * ((b - a) / n)

    def owners(self, grid: PartitionGrid, axis: int, start: int = 0,
               stop: int | None = None) -> np.ndarray:
        """Partition index along ``axis`` of samples ``start:stop``: int64."""
        pos = self.positions(axis, start, stop)
        index = np.floor((pos + 0.5) / grid.part_shape[axis]).astype(np.int64)
        return np.clip(index, 0, grid.factors[axis] - 1)

    def coords(self, grid: PartitionGrid, axis: int, start: int = 0,
               stop: int | None = None) -> np.ndarray:
        """float32 coordinates of samples ``start:stop`` along ``axis`` (``grid.normalise``'s
        mapping)."""
        pos = self.positions(axis, start, stop)
        full = np.zeros((len(pos), grid.ndim))
        full[:, axis] = pos
        return grid.normalise(full)[:, axis]

    def runs(self, grid: PartitionGrid, axis: int) -> list[tuple[int, int, int]]:
        """(partition index, first sample, stop sample) of each partition along ``axis``.

        Computed a block of samples at a time, so a long axis (hours of audio) costs memory
        for its runs only."""
        runs: list[tuple[int, int, int]] = []
        n = self.shape[axis]
        for block in range(0, n, RUN_BLOCK):
            owners = self.owners(grid, axis, block, min(n, block + RUN_BLOCK))
            cuts = np.flatnonzero(np.diff(owners)) + 1
            for s, e in zip(np.concatenate([[0], cuts]), np.concatenate([cuts, [len(owners)]])):
                j, s, e = int(owners[s]), block + int(s), block + int(e)
                if runs and runs[-1][0] == j:
                    s = runs.pop()[1]
                runs.append((j, s, e))
        return runs

    def partitions(self, grid: PartitionGrid) -> list[int]:
        """Ids of every partition owning at least one sample."""
        index = [sorted({i for i, _, _ in self.runs(grid, axis)}) for axis in range(grid.ndim)]
        mesh = np.meshgrid(*[np.asarray(i) for i in index], indexing="ij")
        return sorted(int(p) for p in np.ravel_multi_index(tuple(mesh), grid.factors).ravel())
