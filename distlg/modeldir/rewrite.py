"""Writing a model directory from another, whole or in part: what export, crop and extend share.

A version-2 source keeps its shards: a shard whose partitions all stay is checked and then
hard-linked (or copied to a URL) unchanged, one that loses some is rewritten with the others,
one that loses all is left out; a quantized source stays quantized, its codes unchanged.
Other sources (version 1, or a version-1 output) go partition group by partition group through
``read_local``, and so does a quantized export (``quantize``: float16, or int8 codes with
their scales). Every partition is checked against the source's checksums as it is read; the
root document is written last.
"""

from __future__ import annotations

import numpy as np
from tqdm.auto import tqdm

from .base import ModelDir, global_layout, local_layout
from .files import write_files_model
from .location import Location
from .quantize import Quantization
from .sharded import (
    GLOBAL,
    PARTITIONS,
    PRESENT_BIT,
    ROOT,
    ShardedModel,
    checksum_chunks,
    group_document,
    root_attributes,
    write_small,
)
from .shards import ShardGrid, crc32c
from .weights import LocalWeights, Shard
from .writer import ShardWriter

FORMATS = ("shards", "safetensors")
"""What an edit writes: version 2 (shards) or version 1 (one safetensors file per partition)."""


def write_subset(src: ModelDir, out: Location, keep: np.ndarray, fmt: str = "shards",
                 progress: bool = False, quantize: Quantization | None = None) -> None:
    """Write ``src``'s partitions where ``keep`` [num_partitions] is true (they must be present)
    and its global tensors to ``out``, as a model directory (no training state), quantized as
    ``quantize`` asks (its scales are measured here)."""
    if fmt == "safetensors":
        if out.path is None:
            raise ValueError("one file per partition is written to local folders only")
        pids = np.flatnonzero(keep).tolist()
        parts = ((p, {k: v[0] for k, v in src.read_local([p]).items()})
                 for p in tqdm(pids, unit="partition", disable=not progress))
        write_files_model(out.path, src.grid, src.arch, src.signal, src.read_global(), parts)
        return
    if quantize is not None:
        _quantized_subset(src, out, keep, quantize, progress)
        return
    if isinstance(src, ShardedModel):
        _shards_subset(src, out, keep, progress)
        return
    shards = ShardGrid.for_grid(src.grid.factors)
    writer = ShardWriter(out, src.grid, src.arch, src.signal, shards)
    done = [np.zeros(0, np.int64)], [np.zeros(0, np.uint32)]
    for group in tqdm(_groups(shards, keep), unit="shard", disable=not progress):
        written, crcs = writer.write(group, src.read_local(group.tolist()))
        done[0].append(written)
        done[1].append(crcs)
    writer.finish(np.concatenate(done[0]), np.concatenate(done[1]), src.read_global())


def _groups(shards: ShardGrid, keep: np.ndarray) -> list[np.ndarray]:
    """The partitions ``keep`` marks, grouped by shard (a shard is written once, whole)."""
    pids = np.flatnonzero(keep)
    shard_of, _ = shards.locate(pids)
    order = np.argsort(shard_of, kind="stable")
    return np.split(pids[order], np.flatnonzero(np.diff(shard_of[order])) + 1) if len(pids) else []


def _shards_subset(src: ShardedModel, out: Location, keep: np.ndarray, progress: bool) -> None:
    """The shard-preserving path of ``write_subset``."""
    codes = src.codes.copy()
    codes[~keep] = 0
    local = src.weights
    target = LocalWeights(out, src.shards, src.local_layout, src.quantization,
                          tuple(src.arch.constant_shapes()))
    count = int(np.prod(src.shards.shards)) if src.local_layout.width else 0
    for shard in tqdm(range(count), unit="shard", disable=not progress):
        held, kept = shard_masks(src, keep, shard)
        if not kept.any():
            continue
        data = local.read(shard)   # checked: index, chunks, scales, and codes
        src._check_codes(src.shards.partitions(shard)[held], data.crcs[held], local.array.location, shard)
        if (kept == held).all():
            target.link(local, shard)
        else:
            target.write(shard, data.keep(kept))
    src.read_global_flat()  # checked before it is linked; numpy only, so crop needs no torch
    write_checksums(out, src, codes)
    if count:
        target.copy_metadata(local)
    for key in _global_keys(src):
        out.link(src.location, key)
    write_root(out, src, int((codes != 0).sum()), src.global_checksum)


def shard_masks(src: ShardedModel, keep: np.ndarray, shard: int) -> tuple[np.ndarray, np.ndarray]:
    """bool [slots] each: the slots of ``shard`` that ``src`` holds, and those of them ``keep``
    keeps."""
    slot_pids = src.shards.partitions(shard)
    inside = slot_pids >= 0
    held = np.zeros(src.shards.slots, dtype=bool)
    held[inside] = src.present[slot_pids[inside]]
    kept = held.copy()
    kept[inside] &= keep[slot_pids[inside]]
    return held, kept


def _quantized_subset(src: ModelDir, out: Location, keep: np.ndarray, asked: Quantization,
                      progress: bool) -> None:
    """``write_subset`` into a quantized model: the scales measured (per-tensor: a first pass
    over the partitions), then each shard's codes written, then the rest."""
    constants = tuple(src.arch.constant_shapes())
    local, glob = local_layout(src.arch), global_layout(src.arch)
    shards = src.shards if isinstance(src, ShardedModel) else ShardGrid.for_grid(src.grid.factors)
    groups = _groups(shards, keep) if local.width else []
    flat = (src.read_global_flat() if isinstance(src, ShardedModel)
            else glob.pack_one(src.read_global()))[None]
    quant = Quantization(asked.dtype, asked.scale, level=asked.level)
    if quant.dtype == "int8":
        glob_scales = tuple(quant.codes(glob, constants).scales(flat)[0].tolist())
        local_scales = None
        if not quant.per_partition and groups:
            codes = quant.codes(local, constants)
            peaks = np.max([codes.peaks(_rows(src, g)).max(axis=0) for g in
                            tqdm(groups, unit="shard", desc="scales", disable=not progress)], axis=0)
            local_scales = tuple(codes.to_scales(peaks[None])[0].tolist())
        quant = Quantization(quant.dtype, quant.scale, local_scales, glob_scales, quant.level)
    target = LocalWeights(out, shards, local, quant, constants)
    codes = np.zeros(src.grid.num_partitions, dtype=np.uint64)
    for group in tqdm(groups, unit="shard", desc="codes", disable=not progress):
        shard, slots = _slots(shards, group)
        values, scales = target.quantize(_rows(src, group))
        data = _scatter(shards, slots, values, scales)
        crcs = target.write(shard, data)
        codes[group] = PRESENT_BIT | crcs[slots].astype(np.uint64)
    if not local.width:  # no local tensors (one SIREN): each partition an empty chunk
        codes[keep] = PRESENT_BIT | np.uint64(crc32c(b""))
    write_checksums(out, src, codes, compact=True)
    glob_codes = quant.codes(glob, constants)
    stored = glob_codes.encode(flat, quant.global_scales)[0]
    write_small(out, GLOBAL, stored, compress=quant.level, compact=True,
                attributes={"distlg": {"quantization": {**quant.header(), **quant.part(glob_codes, False)}}})
    if local.width:
        target.write_metadata()
    stored_crc = crc32c(stored.astype(stored.dtype.newbyteorder("<")).tobytes())
    write_root(out, src, int((codes != 0).sum()), stored_crc, quant, shards)


def _rows(src: ModelDir, pids: np.ndarray) -> np.ndarray:
    """float32 local rows [len(pids), P] of ``pids``, checked as they are read."""
    if isinstance(src, ShardedModel):
        return src.read_rows(np.asarray(pids, dtype=np.int64))
    return local_layout(src.arch).pack(src.read_local(pids.tolist()))


def _slots(shards: ShardGrid, group: np.ndarray) -> tuple[int, np.ndarray]:
    shard_of, slot_of = shards.locate(group)
    return int(shard_of[0]), slot_of


def _scatter(shards: ShardGrid, slots: np.ndarray, codes: np.ndarray,
             scales: np.ndarray | None) -> Shard:
    """A ``Shard`` holding ``codes`` [n, width] (and ``scales`` [n, T]) at ``slots``."""
    full = np.zeros((shards.slots, codes.shape[1]), dtype=codes.dtype)
    full[slots] = codes
    present = np.zeros(shards.slots, dtype=bool)
    present[slots] = True
    per_slot = None
    if scales is not None:
        per_slot = np.zeros((shards.slots, scales.shape[1]), dtype=np.float32)
        per_slot[slots] = scales
    return Shard(full, present, np.zeros(shards.slots, dtype=np.uint32), per_slot)


def _global_keys(src: ShardedModel) -> list[str]:
    keys = [f"{GLOBAL}/zarr.json", f"{GLOBAL}/c/0"]
    return [k for k in keys if src.location.exists(k)]


def write_checksums(out: Location, src: ModelDir, codes: np.ndarray, compact: bool = False) -> None:
    """``partitions/``: each partition's entry (0: absent); ``compact`` JSON for a quantized
    model (default: as ``src`` is)."""
    compact = compact or getattr(src, "quantization", None) is not None
    write_small(out, PARTITIONS, codes.reshape(src.grid.factors), checksum_chunks(src.grid.factors),
                compress=True, compact=compact)


def write_root(out: Location, src: ModelDir, present: int, global_crc: int,
               quantization: Quantization | None = None, shards: ShardGrid | None = None) -> None:
    """The root document (last): ``src``'s description, with ``quantization`` (default: the
    source's own)."""
    raw = src.manifest.raw
    quantization = quantization or getattr(src, "quantization", None)
    attrs = root_attributes({k: raw[k] for k in ("signal", "grid", "architecture")},
                            shards or src.shards, src.arch, present, global_crc, None, quantization)
    out.sync_folder()
    out.write(ROOT, group_document({"distlg": attrs}), sync_to_disk=True)
