"""Writing a model directory from another, whole or in part: what export, crop and extend share.

A version-2 source keeps its shards: a shard whose partitions all stay is checked and then
hard-linked (or copied to a URL) unchanged, one that loses some is rewritten with the others,
one that loses all is left out. Other sources (version 1, or a version-1 output) go partition
group by partition group through ``read_local``. Every partition is checked against the
source's checksums as it is read; the root document is written last.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from .base import ModelDir
from .files import write_files_model
from .location import Location
from .sharded import GLOBAL, LOCAL, PARTITIONS, ROOT, ShardedModel, group_document, root_attributes
from .shards import ShardGrid, crc32c
from .writer import ShardWriter

FORMATS = ("shards", "safetensors")
"""What an edit writes: version 2 (shards) or version 1 (one safetensors file per partition)."""


def write_subset(src: ModelDir, out: Location, keep: np.ndarray, fmt: str = "shards",
                 progress: bool = False) -> None:
    """Write ``src``'s partitions where ``keep`` [num_partitions] is true (they must be present)
    and its global tensors to ``out``, as a model directory (no training state)."""
    if fmt == "safetensors":
        if out.path is None:
            raise ValueError("one file per partition is written to local folders only")
        pids = np.flatnonzero(keep).tolist()
        parts = ((p, {k: v[0] for k, v in src.read_local([p]).items()})
                 for p in tqdm(pids, unit="partition", disable=not progress))
        write_files_model(out.path, src.grid, src.arch, src.signal, src.read_global(), parts)
        return
    if isinstance(src, ShardedModel):
        _shards_subset(src, out, keep, progress)
        return
    shards = ShardGrid.for_grid(src.grid.factors)
    writer = ShardWriter(out, src.grid, src.arch, src.signal, shards)
    pids = np.flatnonzero(keep)
    shard_of, _ = shards.locate(pids)
    order = np.argsort(shard_of, kind="stable")  # a shard is written once, whole
    groups = np.split(pids[order], np.flatnonzero(np.diff(shard_of[order])) + 1) if len(pids) else []
    done = [np.zeros(0, np.int64)], [np.zeros(0, np.uint32)]
    for group in tqdm(groups, unit="shard", disable=not progress):
        written, crcs = writer.write(group, src.read_local(group.tolist()))
        done[0].append(written)
        done[1].append(crcs)
    writer.finish(np.concatenate(done[0]), np.concatenate(done[1]), src.read_global())


def _shards_subset(src: ShardedModel, out: Location, keep: np.ndarray, progress: bool,
                   on_shard: Callable[[int], None] | None = None) -> None:
    """The shard-preserving path of ``write_subset``."""
    codes = src.codes.copy()
    codes[~keep] = 0
    local = src._array(LOCAL)
    target = out.child(LOCAL)
    count = int(np.prod(src.shards.shards)) if src.local_layout.width else 0
    for shard in tqdm(range(count), unit="shard", disable=not progress):
        slot_pids = src.shards.partitions(shard)
        inside = slot_pids >= 0
        held = np.zeros(src.shards.slots, dtype=bool)
        held[inside] = src.present[slot_pids[inside]]
        if not held.any():
            continue
        kept = held.copy()
        kept[inside] &= keep[slot_pids[inside]]
        if not kept.any():
            continue
        values, present, crcs = local.read_shard(shard)   # checked: index, chunks, and codes
        src._check_codes(slot_pids[held], crcs[held], local.location, shard)
        if (kept == held).all():
            target.link(local.location, src.shards.key(shard))
        else:
            target.write(src.shards.key(shard), _encode(values, kept))
    flat = src.read_global_flat()  # checked; numpy only, so export and crop need no torch
    write_small_arrays(out, src, codes)
    if count:
        out.write(f"{LOCAL}/zarr.json", local.location.read("zarr.json"))
    for key in _global_keys(src):
        out.link(src.location, key)
    _write_root(out, src, int((codes != 0).sum()), crc32c(flat.astype("<f4").tobytes()))


def _encode(values: np.ndarray, kept: np.ndarray) -> bytes:
    from .shards import encode

    return encode(values, kept)[0]


def _global_keys(src: ShardedModel) -> list[str]:
    keys = [f"{GLOBAL}/zarr.json", f"{GLOBAL}/c/0"]
    return [k for k in keys if src.location.exists(k)]


def write_small_arrays(out: Location, src: ShardedModel, codes: np.ndarray) -> None:
    from .sharded import checksum_chunks, write_small

    write_small(out, PARTITIONS, codes.reshape(src.grid.factors), checksum_chunks(src.grid.factors),
                compress=True)


def _write_root(out: Location, src: ShardedModel, present: int, global_crc: int) -> None:
    raw = src.manifest.raw
    attrs = root_attributes({k: raw[k] for k in ("signal", "grid", "architecture")}, src.shards,
                            src.arch, present, global_crc, None)
    out.sync_folder()
    out.write(ROOT, group_document({"distlg": attrs}), sync_to_disk=True)
