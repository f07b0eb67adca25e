"""A model held in memory evaluated on an orthogonal grid of integer positions (every s-th
sample of an axis, one slice of another): the trainer's fixed views for TensorBoard, and the
signal read at the same positions to compare with.

Each position is evaluated by the partition whose box holds it, like every render; positions
of partitions this model (a worker's shard) does not hold are left out and marked, so the
workers' pictures add up to the whole.
"""

from __future__ import annotations

import functools
import itertools
from typing import Sequence

import numpy as np

from ..geometry import PartitionGrid
from ..nn.model import INR
from .render import Share, _share_coords, evaluate_shares


def take(data, index: Sequence[np.ndarray]) -> np.ndarray:
    """Values of ``data`` [*dims, channels] (a Zarr or NumPy array) at the orthogonal grid of
    per-axis integer ``index`` arrays: [*lengths, channels]."""
    if hasattr(data, "get_orthogonal_selection"):
        return np.asarray(data.get_orthogonal_selection(tuple(index) + (slice(None),)))
    return np.asarray(data[np.ix_(*index, np.arange(data.shape[-1]))])


def _runs(owners: np.ndarray) -> list[tuple[int, int, int]]:
    """(partition index, start, stop) of each run of equal owners (sorted positions)."""
    cuts = np.flatnonzero(np.diff(owners)) + 1
    starts, stops = np.concatenate([[0], cuts]), np.concatenate([cuts, [len(owners)]])
    return [(int(owners[a]), int(a), int(b)) for a, b in zip(starts, stops)]


def render_positions(model: INR, grid: PartitionGrid, positions: Sequence[np.ndarray]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The model at the grid of increasing integer ``positions`` per axis: (values [*lengths,
    out] normalised, 0 where not held; held [*lengths] bool, where ``model`` holds the owner)."""
    positions = [np.asarray(p, np.int64) for p in positions]
    lengths = tuple(len(p) for p in positions)
    coords = []
    for axis, pos in enumerate(positions):
        full = np.zeros((len(pos), grid.ndim))
        full[:, axis] = pos
        coords.append(grid.normalise(full)[:, axis].astype(np.float32))
    owners = [np.clip(p // s, 0, f - 1) for p, s, f in zip(positions, grid.part_shape, grid.factors)]
    held_ids = set(model.partition_ids)
    out = np.zeros(lengths + (model.arch.out_dims,), np.float32)
    held = np.zeros(lengths, bool)
    shares = []
    for combo in itertools.product(*[_runs(o) for o in owners]):
        pid = int(np.ravel_multi_index(tuple(j for j, _, _ in combo), grid.factors))
        if pid not in held_ids:
            continue
        where = tuple(slice(a, b) for _, a, b in combo)
        axes = [c[w] for c, w in zip(coords, where)]
        shares.append(Share(pid, tuple(len(a) for a in axes), functools.partial(_share_coords, axes), where))
        held[where] = True
    for share, values in evaluate_shares(model, shares, model.coord_scale.device):
        out[share.where] = values
    return out, held
