"""Signal stores: a Zarr v3 array [*dims, channels] on disk, and what it holds.

A store is one Zarr v3 array in the source's dtype, chunked so that chunk boundaries fall on the
partition grid that training is expected to use (each partition box is a whole number of chunks,
or each chunk a whole number of partitions), Blosc/zstd-compressed. Its attributes, under the
key ``distlg``, say what the signal is and whether ingest finished:

    format, version    "distlg-signal", 1
    kind, axes         e.g. "video", ["t", "y", "x"] (channels are always the last array axis)
    value_range        raw values that map to -1 and +1
    meta               fps or sample_rate, and the source's name and size in bytes; what a
                       downstream task's ingest did (downsample, noise, measurement)
    chunking           the partition size and factors ingest assumed (training takes these
                       factors when it is given no grid), the chunk shape, and
                       the shard shape where chunks are packed into shards (``--shard``)
    ingest             the source's fingerprint and progress (rows done, value statistics)
    complete           written last: a store without it is an interrupted ingest

Zarr writes every chunk and ``zarr.json`` under a temporary name and renames it into place, so
the attributes on disk are always whole. A sharded store (Zarr's sharding codec) packs blocks
of whole partitions' chunks into one shard object each; zarr reads it like any other, chunk by
chunk through the shard's index. Nothing here imports torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np
import zarr
from zarr.codecs import BloscCodec, BloscShuffle, Crc32cCodec
from zarr.storage import LocalStore

from . import bounded, integrity, remote
from .signal import Signal, SignalInfo, StoreError
from .sources.builtin import PREFIX, builtin

FORMAT = "distlg-signal"
VERSION = 1
KEY = "distlg"
"""Attribute key under which the store's description lives."""
CHUNK_BYTES = (512 << 10, 2 << 20)
"""Chunk sizes aimed for: a few hundred KB is where a chunk read stops being dominated by its
~0.6 ms overhead, and a few MB is where a small random patch starts costing too much."""
SHARD_BYTES = (64 << 20, 256 << 20)
"""Shard sizes ``--shard auto`` aims for (uncompressed): few objects, each a whole block of
partitions; a shard is only read a chunk at a time, so its size costs nothing when reading."""
SHARD_ROW_LIMIT = 2 << 30
"""Largest shard-row (one shard's depth along the first axis, all of the other axes) ingest
holds in memory while it writes a sharded store."""


def codec(dtype: np.dtype) -> BloscCodec:
    """Blosc with zstd and byte shuffle: 4.5x on 8-bit video here, where bitshuffle gave 1.4x."""
    return BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle,
                      typesize=np.dtype(dtype).itemsize)


def _divisors(n: int) -> list[int]:
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def chunk_candidates(part: int, size: int) -> list[int]:
    """Chunk lengths along one axis that keep the partition grid aligned: the divisors of the
    partition length, and its multiples up to the first that covers the axis."""
    multiples = [m * part for m in range(2, math.ceil(size / part) + 1)]
    return _divisors(part) + multiples


def chunk_shape(shape: Sequence[int], part_shape: Sequence[int], value_bytes: int,
                target: tuple[int, int] = CHUNK_BYTES) -> tuple[int, ...]:
    """A chunk shape (without the channel axis) aligned with partitions of ``part_shape``, of
    ``target`` bytes when the candidates allow.

    Starts from one partition per chunk. Too big: split the longest axis at the next smaller
    divisor (the first axis wins ties, so the slabs ingest holds stay thin). Too small: grow the
    shortest axis to its next candidate while that stays within the target (the last axis wins
    ties, for the same reason). ``value_bytes`` is the size of one position (channels x itemsize).
    """
    low, high = target
    options = [chunk_candidates(p, d) for p, d in zip(part_shape, shape)]
    pick = [opts.index(p) for opts, p in zip(options, part_shape)]

    def nbytes(choice: list[int]) -> int:
        return math.prod(opts[i] for opts, i in zip(options, choice)) * value_bytes

    while nbytes(pick) > high and any(pick):
        axis = max((a for a in range(len(pick)) if pick[a]), key=lambda a: (options[a][pick[a]], -a))
        pick[axis] -= 1
    while nbytes(pick) < low:
        growable = [a for a in range(len(pick)) if pick[a] + 1 < len(options[a])
                    and nbytes(pick[:a] + [pick[a] + 1] + pick[a + 1:]) <= high]
        if not growable:
            break
        axis = min(growable, key=lambda a: (options[a][pick[a]], -a))
        pick[axis] += 1
    return tuple(opts[i] for opts, i in zip(options, pick))


def shard_unit(part_shape: Sequence[int], chunks: Sequence[int]) -> tuple[int, ...]:
    """The smallest shard extent per axis: a whole number of partitions and of chunks."""
    return tuple(math.lcm(int(p), int(c)) for p, c in zip(part_shape, chunks))


def shard_shape(shape: Sequence[int], part_shape: Sequence[int], chunks: Sequence[int],
                value_bytes: int, target: tuple[int, int] = SHARD_BYTES) -> tuple[int, ...]:
    """A shard shape (without the channel axis) for ``--shard auto``: on every axis a multiple
    of ``shard_unit`` (so shard boundaries are partition and chunk boundaries), at most the
    smallest such multiple that covers the axis.

    Starts from one unit and grows the last axis one unit at a time while the shard stays
    within ``target[1]`` bytes, then the axis before it, and so on: shards span the inner axes
    first, so the shard-row ingest holds (one shard deep along the first axis) stays small. A
    store within ``target[1]`` is one shard; otherwise shards end up between half the target's
    top and its top, unless one unit is already larger. ``value_bytes`` is the size of one
    position (channels x itemsize).
    """
    unit = shard_unit(part_shape, chunks)
    most = [math.ceil(d / u) for d, u in zip(shape, unit)]
    pick = [1] * len(unit)

    def nbytes(choice: list[int]) -> int:
        return math.prod(m * u for m, u in zip(choice, unit)) * value_bytes

    for axis in reversed(range(len(unit))):
        grown = pick[:axis] + [pick[axis] + 1] + pick[axis + 1:]
        while pick[axis] < most[axis] and nbytes(grown) <= target[1]:
            pick = grown
            grown = pick[:axis] + [pick[axis] + 1] + pick[axis + 1:]
        if pick[axis] < most[axis]:
            break
    return tuple(m * u for m, u in zip(pick, unit))


def shard_row_bytes(shape: Sequence[int], shards: Sequence[int], value_bytes: int) -> int:
    """Bytes of one shard-row: ``shards[0]`` rows of the whole signal (what ingest holds)."""
    return min(int(shards[0]), int(shape[0])) * math.prod(int(d) for d in shape[1:]) * value_bytes


def location(spec: str | Path) -> str | Path:
    """Where a store is: a URL as given (a Path would fold its ``//``), else a local Path."""
    return str(spec) if remote.is_url(spec) else Path(spec)


def exists(path: str | Path) -> bool:
    """Whether anything is at ``path`` (for a URL: any object under it)."""
    return not remote.is_empty(str(path)) if remote.is_url(path) else Path(path).exists()


def create(path: str | Path, shape: Sequence[int], dtype: np.dtype, chunks: Sequence[int],
           axes: Sequence[str], info: dict, shards: Sequence[int] | None = None) -> zarr.Array:
    """A new, empty store at ``path`` (a local path or an s3:// URL; replacing what is there)
    described by ``info``; with ``shards``, its chunks are packed into shards of that shape
    (without the channel axis)."""
    shape = tuple(int(d) for d in shape)
    target = remote.url_store(str(path), writable=True) if remote.is_url(path) else str(path)
    return zarr.create_array(store=target, shape=shape, dtype=np.dtype(dtype),
                             chunks=tuple(int(c) for c in chunks) + (shape[-1],),
                             shards=tuple(int(s) for s in shards) + (shape[-1],) if shards else None,
                             compressors=(codec(dtype), Crc32cCodec()), fill_value=0,
                             overwrite=True, dimension_names=tuple(axes) + ("c",),
                             config=integrity.CONFIG,
                             attributes={KEY: {"format": FORMAT, "version": VERSION,
                                               "integrity": integrity.recorded(
                                                   dtype, tuple(chunks) + (shape[-1],)),
                                               **info}})


def open_array(path: str | Path, mode: str = "r") -> zarr.Array | None:
    """The Zarr array at ``path`` (or a URL; writable with ``mode="r+"`` where its scheme is)
    if it is a distlg store (complete or not), else None; a URL that cannot be read raises
    ``remote.RemoteError``."""
    try:
        if remote.is_url(path):
            target = remote.url_store(str(path), writable=mode != "r")
        else:
            target = LocalStore(str(path), read_only=mode == "r")
        checked = integrity.CheckedStore(target, str(path))
        array = zarr.open_array(store=checked, mode=mode, zarr_format=3, config=integrity.CONFIG)
    except remote.RemoteError:
        raise
    except Exception:  # missing, not Zarr, damaged metadata: all mean "no store here"
        return None
    info = array.attrs.get(KEY)
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        return None
    if remote.is_url(path):  # no chunk may be larger than the array's chunks can be
        target.object_limit = bounded.object_limit(array)
    # reading a store that records every chunk as written: a missing chunk is an error
    checked.strict = mode == "r" and bool((info.get("integrity") or {}).get("every_chunk"))
    return array


def info(array: zarr.Array) -> dict:
    """The store's description (the ``distlg`` attributes)."""
    return dict(array.attrs[KEY])


def is_complete(path: str | Path) -> bool:
    """Whether ``path`` holds a distlg store whose ingest finished."""
    array = open_array(path)
    return array is not None and bool(info(array).get("complete"))


def update(array: zarr.Array, **changes) -> None:
    """Merge ``changes`` into the store's description (one atomic rewrite of zarr.json)."""
    array.update_attributes({KEY: {**info(array), **changes}})


def remove(path: str | Path) -> None:
    """Delete the store at ``path``; refuses anything but a distlg store or an empty folder
    (for a URL: a prefix without objects)."""
    if remote.is_url(path):
        if open_array(path) is None and not remote.is_empty(str(path)):
            raise StoreError(f"{path} holds objects that are not a distlg signal store; refusing "
                             "to replace them")
        remote.delete(str(path))
        return
    path = Path(path)
    if open_array(path) is None and not (path.is_dir() and not any(path.iterdir())):
        raise StoreError(f"{path} exists and is not a distlg signal store; refusing to replace it")
    shutil.rmtree(path)


def open_store(path: str | Path) -> Signal:
    """The signal in the complete store at ``path`` (or a URL: https://, s3://), read lazily
    (chunks on demand)."""
    url = remote.is_url(path)
    path = str(path) if url else Path(path)
    if not url and not path.exists():
        raise StoreError(f"{path} does not exist: write it with `distlg ingest SOURCE {path}`")
    array = open_array(path)
    if array is None:
        why = (f"({remote.absence(str(path))})" if url
               else "(no Zarr v3 array with distlg attributes); write one with `distlg ingest`")
        raise StoreError(f"{path} is not a distlg signal store {why}")
    desc = info(array)
    integrity.check_metadata(array, desc.get("integrity"), str(path))
    if desc.get("version") != VERSION:
        raise StoreError(f"{path} has store version {desc.get('version')!r}; this distlg reads "
                         f"version {VERSION}")
    if not desc.get("complete") and "render" in desc:
        raise StoreError(f"{path} is a render that did not finish (it was stopped before it was "
                         "complete); render it again")
    if not desc.get("complete"):
        done = desc.get("ingest", {}).get("done", 0)
        raise StoreError(f"{path} is incomplete (ingest stopped after {done} of {array.shape[0]} "
                         f"{desc.get('axes', ['rows'])[0]} rows); run the same `distlg ingest` "
                         "again to resume it")
    facts = {**SignalInfo.facts(desc.get("meta", {})), "store": str(path),
             "fingerprint": fingerprint(desc.get("ingest", {}).get("fingerprint") or desc.get("render")),
             "ingest_factors": desc.get("chunking", {}).get("factors")}
    return StoreSignal(array, desc["kind"], tuple(desc["value_range"]), **facts)


class StoreSignal(Signal):
    """A signal read from a store: a chunk that is missing or does not decode is one line
    naming it (``integrity``), never zeros or a codec's traceback."""

    def read(self, box) -> np.ndarray:
        return integrity.read_or_name(self.data, box, str(self.info.store))


def fingerprint(source_identity: object) -> str:
    """A short digest of what ingest recorded of the source (name, size, modification time,
    kind, chunking): two stores of the same shape from different sources differ in it."""
    text = json.dumps(source_identity, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def open_signal(spec: str | Path) -> Signal:
    """``builtin:NAME[@HxW]``, or the path or URL (https://, s3://) of a Zarr store written by
    ``distlg ingest``."""
    spec = str(spec)
    if spec.startswith(PREFIX):
        return builtin(spec[len(PREFIX):])
    return open_store(spec)


def attributes(info: SignalInfo) -> dict:
    """What a store's attributes say about the signal ``info`` describes (shape, channels and
    dtype are the array's own)."""
    return {"kind": info.kind, "axes": list(info.axes), "value_range": list(info.value_range),
            "meta": info.meta()}


def stored_bytes(path: str | Path) -> int:
    """Bytes the store occupies on disk (or in object storage)."""
    if remote.is_url(path):
        return remote.stored_bytes(str(path))
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
