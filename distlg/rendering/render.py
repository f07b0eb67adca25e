"""Evaluating a model on the signal's grid, partition by partition, in bounded memory.

``render_partitions`` evaluates a model held in memory on its own partitions (the trainer's
evaluation). ``RegionRender`` and ``render`` serve users of a model directory: any region, on
the signal's grid or a finer or coarser one (``--scale``), streamed in slabs while reading only
the partitions the region needs (byte ranges of their shards). Both hand their partitions'
shares to one evaluator, ``evaluate_shares``: shares of equal size are evaluated together, about
``EVAL_SAMPLES`` positions per call, and a larger share in pieces of that size.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from ..geometry import Box, PartitionGrid
from ..modeldir.format import ModelDir, id_ranges
from ..nn import fused
from ..nn.model import INR
from ..resources import available_memory, gib, usable_device
from .region import RenderError, RenderGrid, Slab, box_text

__all__ = ["EVAL_SAMPLES", "SLAB_VALUES", "RegionRender", "RenderError", "Slab", "Share",
           "evaluate_shares", "render", "render_partitions"]

EVAL_SAMPLES = 1 << 18
"""Positions evaluated per forward call when rendering (bounded memory)."""


def box_positions(box: Box, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Integer positions ``start:stop`` of ``box`` in C order: int64 [stop - start, ndim]."""
    sizes = [b - a for a, b in box]
    stop = math.prod(sizes) if stop is None else stop
    offset = np.stack(np.unravel_index(np.arange(start, stop), sizes), axis=-1)
    return offset + np.asarray([a for a, _ in box])


def intersect(a: Box, b: Box) -> Box | None:
    out = tuple((max(x0, y0), min(x1, y1)) for (x0, x1), (y0, y1) in zip(a, b))
    return None if any(hi <= lo for lo, hi in out) else out


@dataclass
class Share:
    """The part of a render that one partition evaluates: ``size`` samples per axis, whose
    coordinates ``coords(start, stop)`` gives in C order (float32 [stop - start, ndim])."""

    pid: int
    size: tuple[int, ...]
    coords: Callable[[int, int], np.ndarray]
    where: object = None
    """What the caller needs to place the values (a box, output slices)."""


def evaluate_shares(model: INR, shares: Sequence[Share], device: torch.device
                    ) -> Iterator[tuple[Share, np.ndarray]]:
    """Yield each share with its values [*size, out] (normalised, as the model predicts them).

    Shares of equal size are evaluated together, about ``EVAL_SAMPLES`` positions per call; a
    share larger than that is evaluated in pieces of it."""
    by_size: dict[tuple[int, ...], list[Share]] = {}
    for share in shares:
        by_size.setdefault(share.size, []).append(share)
    for size, group in by_size.items():
        volume = math.prod(size)
        if volume > EVAL_SAMPLES:
            for share in group:
                yield share, _evaluate_large(model, share, device)
            continue
        per_call = max(1, EVAL_SAMPLES // volume)
        for i in range(0, len(group), per_call):
            part = group[i:i + per_call]
            x = torch.from_numpy(np.stack([s.coords(0, volume) for s in part])).to(device)
            values = fused.predict(model, x, [s.pid for s in part]).cpu().numpy()
            for share, v in zip(part, values):
                yield share, v.reshape(size + (-1,))


def _evaluate_large(model: INR, share: Share, device: torch.device) -> np.ndarray:
    volume = math.prod(share.size)
    flat = np.empty((volume, model.arch.out_dims), dtype=np.float32)
    for a in range(0, volume, EVAL_SAMPLES):
        b = min(volume, a + EVAL_SAMPLES)
        x = torch.from_numpy(share.coords(a, b)[None]).to(device)
        flat[a:b] = fused.predict(model, x, [share.pid])[0].cpu().numpy()
    return flat.reshape(share.size + (-1,))


def _box_coords(grid: PartitionGrid, box: Box, start: int, stop: int) -> np.ndarray:
    """Coordinates of the integer positions ``start:stop`` (C order) of ``box``."""
    return grid.normalise(box_positions(box, start, stop))


def render_partitions(model: INR, grid: PartitionGrid, pids: Sequence[int] | None = None,
                      region: Box | None = None, offsets: np.ndarray | None = None
                      ) -> Iterator[tuple[int, Box, np.ndarray]]:
    """Yield (pid, box, values [*box sizes, out]) for each partition's share of ``region``
    (default: the whole signal), values normalised to [-1, 1] as the model predicts them.
    A position is evaluated by the partition whose un-grown box holds it. ``offsets`` [k,
    ndim]: each value is instead the model's mean over the coordinates offset by those (a
    --downsample store's footprint, ``training.measured.footprint_offsets``)."""
    region = region or tuple((0, d) for d in grid.shape)
    pids = model.partition_ids if pids is None else [int(p) for p in pids]
    shares = []
    for p in pids:
        box = intersect(grid.valid_box(p), region)
        if box is not None:
            coords = functools.partial(_box_coords, grid, box)
            shares.append(Share(p, tuple(hi - lo for lo, hi in box), coords, box))
    device = model.coord_scale.device
    if offsets is None:
        for share, values in evaluate_shares(model, shares, device):
            yield share.pid, share.where, values
        return
    for share in shares:
        moved = [dataclasses.replace(share, coords=_shifted(share.coords, shift)) for shift in offsets]
        values = [v for _, v in evaluate_shares(model, moved, device)]
        yield share.pid, share.where, np.mean(values, axis=0, dtype=np.float64).astype(np.float32)


def _shifted(coords: Callable[[int, int], np.ndarray], shift: np.ndarray):
    return lambda start, stop: coords(start, stop) + shift


# -- regions of a model directory, streamed --------------------------------------------------------
SLAB_VALUES = 1 << 22
"""Values (samples x channels) a render holds and hands to its writer at once: whole rows
along the first axis (frames, image rows, audio samples, volume slices), at least one."""


class RegionRender:
    """A planned render of ``region`` (default: the whole signal) of a model directory.

    Planning reads only the manifest and the checksums; it fails, naming them, when the region
    needs partitions the model no longer holds, unless ``fill`` (in signal units) stands in for
    them, and in one line when ``device`` is unknown or this machine cannot use it. Iterating
    streams ``Slab``s in order. It walks the region one layer of partitions (along the first
    axis) at a time, reading that layer's partitions (and the global tensors once), so memory
    holds one layer's weights and one slab, however large the region.
    """

    def __init__(self, model: str | Path | ModelDir, region: Box | None = None,
                 scale: float | Sequence[float] = 1.0, fill: float | None = None,
                 device: str | torch.device = "cpu"):
        self.md = model if isinstance(model, ModelDir) else ModelDir.open(model)
        self.grid, self.device = self.md.grid, usable_device(device, RenderError)
        self.info = self.md.signal
        region = region or tuple((0, d) for d in self.grid.shape)
        _check_region(region, self.grid.shape, self.info.axes)
        scale = (float(scale),) * self.grid.ndim if np.isscalar(scale) else tuple(scale)
        if len(scale) != self.grid.ndim or not all(math.isfinite(s) and s > 0 for s in scale):
            raise RenderError(f"scale needs {self.grid.ndim} positive factors, got {scale}")
        if fill is not None and not math.isfinite(fill):
            raise RenderError(f"the fill value must be a finite number, got {fill}")
        self.render_grid = RenderGrid(tuple(region), scale)
        self.needed = self.render_grid.partitions(self.grid)
        present = self.md.present
        self.present = set(np.asarray(self.needed)[present[self.needed]].tolist()) if self.needed else set()
        self.missing = [p for p in self.needed if p not in self.present]
        if self.missing and fill is None:
            raise RenderError(f"region {box_text(region)} needs partitions {id_ranges(self.missing)}, "
                              "which this model does not hold (cropped); pass a fill value "
                              "(--fill VALUE) to render them as a constant")
        self.fill = None if fill is None else float(self.info.normalise(np.float32(fill)))

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the render: samples per axis, then channels."""
        return self.render_grid.shape + (self.info.channels,)

    def memory_needed(self, held_per_value: float = 0.0) -> int:
        """Bytes a render holds at once: its largest slab (values, a converted copy and the
        coordinates of a chunk) plus ``held_per_value`` bytes per value of the whole output
        (a writer or caller that keeps it all, e.g. one PNG image)."""
        rows = min(self.shape[0], self._rows_per_slab())
        return int(rows * math.prod(self.shape[1:]) * 12 + held_per_value * math.prod(self.shape))

    def _rows_per_slab(self) -> int:
        """Rows of the first axis in one slab: ``SLAB_VALUES`` values, at least one row."""
        return max(1, SLAB_VALUES // math.prod(self.shape[1:]))

    def check_memory(self, held_per_value: float = 0.0, what: str = "this render") -> None:
        """Refuse, before anything is allocated, a render that needs more memory than is free."""
        needed, free = self.memory_needed(held_per_value), available_memory()
        if needed > 0.8 * free:
            raise RenderError(f"{what} ({' x '.join(map(str, self.shape))} values) needs about "
                              f"{gib(needed)} of memory and {gib(free)} is available; render a "
                              "smaller region or scale" + (", or write .zarr or .npy, which "
                                                           "stream" if held_per_value else ""))

    @property
    def reads(self) -> list[int]:
        """The partitions a render reads (besides the global tensors): those it needs that the
        model holds."""
        return sorted(self.present)

    def __iter__(self) -> Iterator[Slab]:
        glob = self.md.read_global()
        runs = [self.render_grid.runs(self.grid, a) for a in range(self.grid.ndim)]
        coords = [self.render_grid.coords(self.grid, a) for a in range(1, self.grid.ndim)]
        per_slab = self._rows_per_slab()
        for j0, r0, r1 in runs[0]:
            shares = self._layer_shares(j0, runs[1:])
            held = [p for p, _ in shares if p in self.present]
            model = self.md.load(held, self.device, global_tensors=glob) if held else None
            for s in range(r0, r1, per_slab):
                e = min(r1, s + per_slab)
                rows = self.render_grid.coords(self.grid, 0, s, e)
                yield Slab(s, self._slab(model, shares, e - s, [rows] + coords))
            del model

    def _layer_shares(self, j0: int, runs: list) -> list[tuple[int, tuple[slice, ...]]]:
        """(pid, output slices of the other axes) of every partition in layer ``j0``."""
        out = []
        for combo in itertools.product(*runs):
            pid = int(np.ravel_multi_index((j0,) + tuple(j for j, _, _ in combo), self.grid.factors))
            out.append((pid, tuple(slice(a, b) for _, a, b in combo)))
        return out

    def _slab(self, model: INR | None, shares: list, rows: int,
              coords: list[np.ndarray]) -> np.ndarray:
        """Values of ``rows`` rows; ``coords`` holds the rows' coordinates along the first axis
        and all coordinates along the others."""
        out = np.empty((rows,) + self.shape[1:], dtype=np.float32)
        held = []
        for pid, where in shares:
            where = (slice(0, rows),) + where
            if pid not in self.present:
                out[where] = self.fill
                continue
            axes = [coords[0]] + [c[w] for c, w in zip(coords[1:], where[1:])]
            held.append(Share(pid, tuple(len(a) for a in axes),
                              functools.partial(_share_coords, axes), where))
        for share, values in evaluate_shares(model, held, self.device):
            out[share.where] = values
        return out


def _share_coords(axes: list[np.ndarray], start: int, stop: int) -> np.ndarray:
    """Coordinates ``start:stop`` (C order) of the grid spanned by per-axis ``axes``:
    float32 [stop - start, ndim]."""
    index = np.unravel_index(np.arange(start, stop), tuple(len(a) for a in axes))
    return np.stack([a[i] for a, i in zip(axes, index)], axis=-1)


def _check_region(region: Box, shape: tuple[int, ...], axes: Sequence[str]) -> None:
    if len(region) != len(shape):
        raise RenderError(f"region has {len(region)} axes, the signal {len(shape)}")
    for (a, b), d, name in zip(region, shape, axes):
        if a < 0 or b > d:
            raise RenderError(f"axis {name}: {a}:{b} lies outside the signal (0:{d})")
        if b <= a:
            raise RenderError(f"axis {name}: {a}:{b} is empty")


def render(model: str | Path | ModelDir, region: Box | None = None,
           scale: float | Sequence[float] = 1.0, fill: float | None = None,
           device: str | torch.device = "cpu", raw: bool = False) -> np.ndarray:
    """The render of ``region`` as one array [*samples per axis, channels]: normalised to
    [-1, 1] (float32), or with ``raw`` in the signal's units and dtype."""
    plan = RegionRender(model, region, scale, fill, device)
    plan.check_memory(8.0 if raw else 4.0, "rendering into one array")
    out = np.empty(plan.shape, dtype=np.float32)
    for slab in plan:
        out[slab.start:slab.start + len(slab.values)] = slab.values
    return plan.info.denormalise(out) if raw else out

