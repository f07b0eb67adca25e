"""Writing version-2 model directories: shards by whoever holds their partitions, the rest last.

``ShardWriter.write`` writes the shards of a set of partitions (a worker's, or a whole model's):
one shard at a time, each encoded from the stacked tensors in memory, so memory holds one
shard's bytes whatever the partition count; no fsync per partition (a checkpoint's shards are
synced once, folder by folder). It returns each partition's checksum. ``ShardWriter.finish``
(one process) writes the small arrays (``partitions``, ``global``, moments), the arrays'
metadata and, last, the root document that makes the directory a model. A worker must hold
whole shards (``geometry.shard`` with the shard block): a shard has one writer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import numpy as np

from ..geometry import PartitionGrid
from ..nn.architecture import Architecture
from .base import ADAM_STATES, Layout, global_layout, local_layout
from .location import Location
from .sharded import (
    GLOBAL,
    HARMONIZER,
    LOCAL,
    PARTITIONS,
    PRESENT_BIT,
    ROOT,
    checksum_chunks,
    describe,
    group_document,
    optim_name,
    root_attributes,
    write_small,
)
from .shards import ShardedArray, ShardGrid, crc32c

if TYPE_CHECKING:  # imported where tensors are packed: export and crop run without torch
    import torch


class ShardWriter:
    """Writes one version-2 model directory (or checkpoint) at ``location``."""

    def __init__(self, location: Location, grid: PartitionGrid, arch: Architecture, signal,
                 shards: ShardGrid, states: Sequence[str] = ()):
        self.location, self.grid, self.arch, self.signal = location, grid, arch, signal
        self.shards, self.states = shards, tuple(states)
        self.layout = local_layout(arch)

    def _array(self, name: str) -> ShardedArray:
        return ShardedArray(self.location.child(name), self.shards, self.layout.width)

    def write(self, pids: Sequence[int], stacks: dict[str, "torch.Tensor"],
              moments: dict[str, dict[str, "torch.Tensor"]] | None = None,
              sync_to_disk: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Write the shards holding ``pids`` (sorted) from ``stacks`` [len(pids), *shape] per
        local tensor (rows in ``pids``' order) and, in a checkpoint, ``moments[state]`` alike.
        Returns (pids, crc32c of each one's chunk)."""
        import torch

        pids = np.asarray(pids, dtype=np.int64)
        if len(pids) and (np.diff(pids) <= 0).any():
            raise ValueError("partition ids must be sorted and unique")
        shard_of, _ = self.shards.locate(pids)
        crcs = np.zeros(len(pids), dtype=np.uint32)
        arrays = [(None, self._array(LOCAL), stacks)]
        arrays += [(s, self._array(optim_name(LOCAL, s)), (moments or {})[s]) for s in self.states]
        if not self.layout.width:  # no local tensors (one SIREN): nothing per partition to store
            return pids, np.full(len(pids), crc32c(b""), dtype=np.uint32)
        for shard in np.unique(shard_of).tolist():
            slot_pids = self.shards.partitions(shard)
            present = np.isin(slot_pids, pids)
            rows = torch.from_numpy(np.searchsorted(pids, slot_pids[present]))
            for state, array, source in arrays:
                values = np.zeros((self.shards.slots, self.layout.width), dtype=np.float32)
                values[present] = self.layout.pack(source, rows)
                written = array.write_shard(shard, values, present, sync_to_disk)
                if state is None:
                    crcs[rows.numpy()] = written
        return pids, crcs

    def finish(self, pids: np.ndarray, crcs: np.ndarray, global_tensors: dict[str, "torch.Tensor"],
               global_moments: dict[str, dict[str, "torch.Tensor"]] | None = None,
               training: dict | None = None, harmonizer: dict[str, "torch.Tensor"] | None = None) -> None:
        """Write what is not a shard, the root document last. ``pids``/``crcs``: every
        partition written (by any worker) and its checksum."""
        import torch

        codes = np.zeros(self.grid.num_partitions, dtype=np.uint64)
        codes[np.asarray(pids, dtype=np.int64)] = PRESENT_BIT | np.asarray(crcs, dtype=np.uint64)
        write_small(self.location, PARTITIONS, codes.reshape(self.grid.factors),
                    checksum_chunks(self.grid.factors), compress=True)
        glob = global_layout(self.arch)
        flat = glob.pack_one(global_tensors)
        write_small(self.location, GLOBAL, flat)
        for state in self.states:  # constants (INCODE's coefficients) have no moments: zeros
            moments = (global_moments or {}).get(state, {})
            moments = {k: moments.get(k, torch.zeros(s)) for k, s in glob.shapes.items()}
            write_small(self.location, optim_name(GLOBAL, state),
                        glob.pack_one(moments))
        names = [LOCAL] + [optim_name(LOCAL, s) for s in self.states] if self.layout.width else []
        for name in names:
            self.location.write(f"{name}/zarr.json", self._array(name).metadata())
        if harmonizer is not None:
            training = {**(training or {}), HARMONIZER: write_harmonizer(self.location, harmonizer)}
        if self.states or harmonizer is not None:
            self.location.write("optim/zarr.json", group_document())
        attrs = root_attributes(describe(self.grid, self.arch, self.signal), self.shards, self.arch,
                                len(pids), crc32c(flat.astype("<f4").tobytes()), training)
        self.location.sync_folder()
        self.location.write(ROOT, group_document({"distlg": attrs}), sync_to_disk=True)


def write_harmonizer(location: Location, tensors: dict[str, "torch.Tensor"]) -> dict:
    """An INCODE checkpoint's harmonizer (weights, and ``optim.<state>.<name>`` moments) as
    flat arrays; returns its manifest section (the layout)."""
    import torch

    weights = {k: v for k, v in tensors.items() if not k.startswith("optim.")}
    layout = Layout({k: tuple(v.shape) for k, v in weights.items()})
    write_small(location, f"optim/{HARMONIZER}", layout.pack_one(weights))
    for state in ADAM_STATES:
        moments = {k: tensors.get(f"optim.{state}.{k}", torch.zeros_like(v)) for k, v in weights.items()}
        write_small(location, optim_name(HARMONIZER, state),
                    layout.pack_one(moments))
    return {"layout": layout.to_list()}
