"""Appending partitions to a model directory: the grid continued along the first axis, the
signal checked against the model's, and the new partitions' files written beside the old ones.

Partition ids are the C-order ravel of the per-axis index, so the old partitions keep their ids
and boxes and the new ones follow them; the coordinate extent stays what the model was trained
on, so old positions keep their coordinates and new ones run beyond 1. The old files are linked
unchanged, so the old region renders bit for bit as before. ``distlg.training.extend`` trains
the new partitions and calls ``write_extended``.
"""

from __future__ import annotations

import math
from pathlib import Path

from ..data.signal import Signal
from ..errors import DistlgError
from ..geometry import PartitionGrid
from ..nn.model import INR
from .format import ModelDir, link_or_copy, manifest_for, partition_file, write_manifest, write_tensors


class ExtendError(DistlgError):
    """A model and signal that cannot be combined by extension."""


def extended_grid(old: PartitionGrid, shape: tuple[int, ...]) -> PartitionGrid:
    """``old`` continued along the first axis to cover ``shape``, with the same partition size,
    halo and coordinate extent."""
    if len(shape) != old.ndim or tuple(shape[1:]) != old.shape[1:]:
        raise ExtendError(f"the signal has shape {tuple(shape)}; extending a model of shape "
                            f"{old.shape} needs the same sizes after the first axis")
    if shape[0] <= old.shape[0]:
        raise ExtendError(f"the signal has {shape[0]} samples along the first axis, no more "
                            f"than the model's {old.shape[0]}: nothing to extend")
    part = old.part_shape[0]
    if old.padding[0]:
        raise ExtendError(f"the model's last partition along the first axis is padded ({old.shape[0]} "
                            f"samples in partitions of {part}); new samples would fall into it")
    grid = PartitionGrid(tuple(shape), (math.ceil(shape[0] / part),) + old.factors[1:],
                         old.overlaps, old.extent)
    if grid.part_shape != old.part_shape:
        raise ExtendError(f"{shape[0]} samples do not split into partitions of {part} "
                            "samples without an empty one; append more or fewer")
    return grid


def check_signal(md: ModelDir, signal: Signal) -> None:
    s = md.signal
    if signal.kind != s.kind or signal.channels != s.channels:
        raise ExtendError(f"the model encodes a {s.kind} with {s.channels} channels, the "
                          f"signal is a {signal.kind} with {signal.channels}")
    if signal.value_range != s.value_range:
        raise ExtendError(f"the signal's value range {signal.value_range} differs from the "
                          f"model's {s.value_range}: its values would normalise differently")


def write_extended(md: ModelDir, path: Path, inr: INR, grid: PartitionGrid, signal: Signal,
           new: list[int], copy: bool) -> None:
    """The new partitions' files and the extended manifest in ``path``, with the model's own
    files linked there first if ``copy`` (the manifest is written last)."""
    entries = [dict(e) for e in md.manifest["partitions"]]
    if copy:
        for name in [md.manifest["global"]["file"]] + [e["file"] for e in entries]:
            link_or_copy(md.path / name, path / name)
    for pid in new:
        entries.append({"id": pid, **write_tensors(path, partition_file(pid), inr.local_state(pid),
                                                   {"partition": str(pid)})})
    info = md.signal.with_shape(signal.shape)
    write_manifest(path, manifest_for(grid, md.arch, info, dict(md.manifest["global"]), entries))
