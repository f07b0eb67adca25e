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
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from ..data.signal import Signal
from ..errors import DistlgError
from ..geometry import PartitionGrid
from ..nn.model import INR
from .files import FileModel, manifest_for, partition_file, write_manifest, write_tensors
from .format import ModelDir
from .location import Location
from .sharded import (
    GLOBAL,
    PARTITIONS,
    PRESENT_BIT,
    ROOT,
    ShardedModel,
    checksum_chunks,
    describe,
    group_document,
    root_attributes,
    write_small,
)
from .shards import ShardGrid
from .weights import LocalWeights, Shard


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


def write_extended(md: ModelDir, out: Location, inr: INR, grid: PartitionGrid,
                   signal: Signal, new: list[int]) -> None:
    """The model ``md`` extended to ``grid`` with ``inr``'s partitions ``new``, written to
    ``out`` (a new, empty location): the old partitions linked unchanged, the new ones added,
    the root document (or manifest) last. The output keeps the source's format."""
    info = md.signal.with_shape(signal.shape)
    if isinstance(md, FileModel):
        _extend_files(md, out.path, inr, grid, info, new)
    else:
        _extend_shards(md, out, inr, grid, info, new)


def _extend_files(md: FileModel, path: Path, inr: INR, grid: PartitionGrid, info, new: list[int]) -> None:
    raw = md.manifest.raw
    entries = [dict(e) for e in raw["partitions"]]
    for name in [raw["global"]["file"]] + [e["file"] for e in entries]:
        os.link(md.location.path / name, path / name) if _same_device(md.location.path, path) \
            else shutil.copyfile(md.location.path / name, path / name)
    for pid in new:
        entries.append({"id": pid, **write_tensors(path, partition_file(pid), inr.local_state(pid),
                                                   {"partition": str(pid)})})
    write_manifest(path, manifest_for(grid, md.arch, info, dict(raw["global"]), entries))


def _same_device(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


def _extend_shards(md: ShardedModel, out: Location, inr: INR, grid: PartitionGrid, info,
                   new: list[int]) -> None:
    """Shards without new partitions are linked; a shard the grid's growth reaches (the last
    row of shards along the first axis, if it was not full) is rewritten with its old and new
    chunks; the others are new. Slots sit where they sat: the block is the same. A quantized
    model's new partitions are quantized as it is (per-tensor scales: the stored ones, values
    beyond them clipped), and ``inr`` then holds what was stored, so that what the caller
    scores is what the directory holds."""
    shards = ShardGrid(grid.factors, md.shards.block)
    constants = tuple(md.arch.constant_shapes())
    old_local = md.weights
    target = LocalWeights(out, shards, md.local_layout, md.quantization, constants)
    new_ids = np.asarray(new, dtype=np.int64)
    layout = md.local_layout
    rows = torch.from_numpy(np.searchsorted(inr.partition_ids, new_ids))
    values_new, scales_new = target.quantize(
        layout.pack({n: p for n, p in inr.named_tensors() if n in layout.shapes}, rows), clip=True)
    _load_stored(inr, layout, rows, target.decode(values_new, scales_new))
    codes = np.zeros(grid.num_partitions, dtype=np.uint64)
    codes[:md.grid.num_partitions] = md.codes
    shard_of, slot_of = shards.locate(new_ids)
    old_rows = md.shards.shards[0]
    for shard in range(int(np.prod(shards.shards))):
        index = np.unravel_index(shard, shards.shards)
        mine = np.flatnonzero(shard_of == shard)
        old_shard = int(np.ravel_multi_index(index, md.shards.shards)) if index[0] < old_rows else None
        held = old_shard is not None and old_local.array.location.exists(md.shards.key(old_shard))
        if not len(mine):
            if held:
                target.link(old_local, old_shard)
            continue
        data = old_local.read(old_shard) if held else Shard(
            np.zeros((shards.slots, target.array.width), dtype=target.array.dtype),
            np.zeros(shards.slots, dtype=bool), np.zeros(shards.slots, dtype=np.uint32),
            np.zeros((shards.slots, target.codes.tensors), np.float32) if target.per_partition else None)
        data.codes[slot_of[mine]] = values_new[mine]
        data.present[slot_of[mine]] = True
        if scales_new is not None:
            data.scales[slot_of[mine]] = scales_new[mine]
        crcs = target.write(shard, data)
        codes[new_ids[mine]] = PRESENT_BIT | crcs[slot_of[mine]].astype(np.uint64)
    target.write_metadata()
    write_small(out, PARTITIONS, codes.reshape(grid.factors), checksum_chunks(grid.factors), compress=True,
                compact=md.quantization is not None)
    for key in (f"{GLOBAL}/zarr.json", f"{GLOBAL}/c/0"):
        out.link(md.location, key)
    attrs = root_attributes(describe(grid, md.arch, info), shards, md.arch, int((codes != 0).sum()),
                            md.manifest.raw["global"]["crc32c"], None, md.quantization)
    out.sync_folder()
    out.write(ROOT, group_document({"distlg": attrs}), sync_to_disk=True)


def _load_stored(inr: INR, layout, rows: torch.Tensor, values: np.ndarray) -> None:
    """Put the stored (decoded) rows ``values`` of the new partitions back into ``inr``."""
    with torch.no_grad():
        for name, stack in layout.unpack(values).items():
            inr[name].index_copy_(0, rows.to(inr[name].device), stack.to(inr[name].device))
