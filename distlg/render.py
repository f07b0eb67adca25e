"""Evaluating a model on the signal's grid, partition by partition, in bounded memory."""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch

from . import fused
from .geometry import Box, PartitionGrid
from .model import INR

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


def render_partitions(model: INR, grid: PartitionGrid, pids: Sequence[int] | None = None,
                      region: Box | None = None) -> Iterator[tuple[int, Box, np.ndarray]]:
    """Yield (pid, box, values [*box sizes, out]) for each partition's share of ``region``
    (default: the whole signal), values normalised to [-1, 1] as the model predicts them.

    A position is evaluated by the partition whose un-grown box holds it. Partitions with the
    same share size are evaluated together, about ``EVAL_SAMPLES`` positions per call.
    """
    region = region or tuple((0, d) for d in grid.shape)
    pids = model.partition_ids if pids is None else [int(p) for p in pids]
    device = model.coord_scale.device
    shares = [(p, intersect(grid.valid_box(p), region)) for p in pids]
    shares = [(p, b) for p, b in shares if b is not None]
    by_size: dict[tuple[int, ...], list[tuple[int, Box]]] = {}
    for p, b in shares:
        by_size.setdefault(tuple(hi - lo for lo, hi in b), []).append((p, b))
    for size, group in by_size.items():
        volume = math.prod(size)
        per_call = max(1, EVAL_SAMPLES // volume)
        for i in range(0, len(group), per_call):
            part = group[i:i + per_call]
            if volume > EVAL_SAMPLES:  # one large share: evaluate in slabs of rows
                for p, b in part:
                    yield p, b, _render_large(model, grid, p, b)
                continue
            pos = np.stack([box_positions(b) for _, b in part])
            coords = torch.from_numpy(grid.normalise(pos)).to(device)
            out = fused.predict(model, coords, [p for p, _ in part]).cpu().numpy()
            for (p, b), values in zip(part, out):
                yield p, b, values.reshape(size + (-1,))


def _render_large(model: INR, grid: PartitionGrid, pid: int, box: Box) -> np.ndarray:
    size = tuple(hi - lo for lo, hi in box)
    volume = math.prod(size)
    out = np.empty((volume, model.arch.out_dims), dtype=np.float32)
    for s in range(0, volume, EVAL_SAMPLES):
        pos = box_positions(box, s, min(volume, s + EVAL_SAMPLES))
        coords = torch.from_numpy(grid.normalise(pos))[None].to(model.coord_scale.device)
        out[s:s + len(pos)] = fused.predict(model, coords, [pid])[0].cpu().numpy()
    return out.reshape(size + (-1,))
