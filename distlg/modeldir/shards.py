"""Shards: blocks of partitions stored as Zarr v3 shards, encoded a whole shard at a time.

A per-partition array (the local weights, an Adam moment) is a Zarr v3 array
``[*grid factors, P]`` of one chunk per partition (its P values), packed into shards of a block
of partitions (``ShardGrid.block``) with zarr's ``sharding_indexed`` codec. Inside a chunk:
the values (little-endian) and their crc32c; at the end of a shard: the index, an (offset,
length) pair per chunk slot in C order, (2^64 - 1, 2^64 - 1) for an absent one, and the
index's own crc32c. Any Zarr v3 reader (zarr-python, tensorstore) reads these arrays.

zarr-python encodes a shard chunk by chunk (about 0.3 ms a chunk here: 5 minutes for 10^6
partitions); every chunk here has the same size, so ``encode`` and ``decode`` do a whole shard
with a few numpy operations and one crc32c call per chunk (about 1 microsecond). Tests check
both ways against zarr-python. Reading part of a shard (``read_slots``) fetches its index, then
only the byte ranges of the chunks asked for.
"""

from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Sequence

import google_crc32c
import numpy as np

from ..errors import DistlgError
from ..geometry import block_shape
from .location import Location

SHARD_PARTITIONS = 4096
"""Partitions in a shard at most: a 10^6-partition model in ~250 objects, a shard of a few
MiB at the usual local widths (4096 x 115 weights: 1.9 MB), few partitions to rewrite where a
crop cuts one."""
EMPTY = np.iinfo(np.uint64).max


class ShardError(DistlgError):
    """A shard or its index that is missing, truncated, damaged or not this model's."""


def partitions_per_shard(partitions: int, workers: int = 1) -> int:
    """Partitions in one shard: ``SHARD_PARTITIONS``, and at most an eighth of a worker's
    partitions, so that workers (who own whole shards) stay within a few percent of each other.
    It depends on the grid and the worker count alone, so that whatever plans a run's workers'
    data (``distlg pack``) agrees with the trainer without knowing the model."""
    return max(1, min(SHARD_PARTITIONS, partitions // (8 * workers)))


@dataclass(frozen=True)
class ShardGrid:
    """The partition grid ``factors`` cut into shards of ``block`` partitions per axis."""

    factors: tuple[int, ...]
    block: tuple[int, ...]

    @classmethod
    def for_grid(cls, factors: Sequence[int], workers: int = 1) -> "ShardGrid":
        """Shards of ``partitions_per_shard`` partitions, near-cubic blocks of the grid."""
        factors = tuple(int(f) for f in factors)
        return cls(factors, block_shape(factors, partitions_per_shard(math.prod(factors), workers)))

    @property
    def shards(self) -> tuple[int, ...]:
        """Shards per axis."""
        return tuple(math.ceil(f / b) for f, b in zip(self.factors, self.block))

    @property
    def slots(self) -> int:
        """Chunk slots in a shard (edge shards have slots outside the grid: always empty)."""
        return math.prod(self.block)

    def locate(self, pids: Sequence[int] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(flat shard id, slot within the shard) of each partition id."""
        index = np.stack(np.unravel_index(np.asarray(pids, dtype=np.int64), self.factors), -1)
        block = np.asarray(self.block)
        shard = np.ravel_multi_index(tuple((index // block).T), self.shards)
        slot = np.ravel_multi_index(tuple((index % block).T), self.block)
        return np.asarray(shard, dtype=np.int64), np.asarray(slot, dtype=np.int64)

    def partitions(self, shard: int) -> np.ndarray:
        """Partition id of every slot of ``shard`` (-1 for a slot outside the grid)."""
        start = np.asarray(np.unravel_index(int(shard), self.shards)) * np.asarray(self.block)
        local = np.stack(np.unravel_index(np.arange(self.slots), self.block), -1) + start
        inside = (local < np.asarray(self.factors)).all(axis=1)
        pids = np.full(self.slots, -1, dtype=np.int64)
        pids[inside] = np.ravel_multi_index(tuple(local[inside].T), self.factors)
        return pids

    def key(self, shard: int) -> str:
        """The shard's object key inside its array's folder (zarr's default chunk key)."""
        index = np.unravel_index(int(shard), self.shards)
        return "c/" + "/".join(str(int(i)) for i in index) + "/0"


def dumps(doc, compact: bool = False) -> bytes:
    """A JSON document as written: indented, or compact where a model is stored for its bytes
    (a quantized model's JSON would otherwise be ~20 % of a 50 K-weight model's bytes)."""
    import json

    text = json.dumps(doc, separators=(",", ":")) if compact else json.dumps(doc, indent=1)
    return (text + "\n").encode()


def crc32c(data) -> int:
    return google_crc32c.value(data)


def encode(values: np.ndarray, present: np.ndarray, compressor=None) -> tuple[bytes, np.ndarray]:
    """One shard's bytes from ``values`` [slots, P] (any fixed-size dtype) and ``present``
    [slots] bool, the whole shard compressed by ``compressor`` (a numcodecs codec) if given;
    also the crc32c of each present chunk's values [n present], uint32."""
    slots, width = values.shape
    raw = np.ascontiguousarray(values.astype(values.dtype.newbyteorder("<"), copy=False))
    raw = raw.view(np.uint8).reshape(slots, -1)
    nbytes = raw.shape[1]
    held = np.flatnonzero(present)
    body = np.empty((len(held), nbytes + 4), dtype=np.uint8)
    body[:, :nbytes] = raw[held]
    crcs = np.fromiter((crc32c(row) for row in body[:, :nbytes]), dtype="<u4", count=len(held))
    body[:, nbytes:] = crcs.view(np.uint8).reshape(-1, 4)
    index = np.full((slots, 2), EMPTY, dtype="<u8")
    index[held, 0] = np.arange(len(held), dtype=np.uint64) * np.uint64(nbytes + 4)
    index[held, 1] = nbytes + 4
    index_bytes = index.tobytes()
    tail = np.asarray([crc32c(index_bytes)], dtype="<u4").tobytes()
    data = body.tobytes() + index_bytes + tail
    return (data if compressor is None else bytes(compressor.encode(data))), crcs.astype(np.uint32)


def decompress(compressor, data: bytes, where: str) -> bytes:
    """``data`` decompressed; a ``ShardError`` if it is not a whole compressed frame."""
    try:
        return bytes(compressor.decode(data))
    except Exception:  # numcodecs raises RuntimeError or ValueError, by codec
        raise ShardError(f"{where} does not decompress (damaged or truncated)") from None


def index_size(slots: int) -> int:
    """Bytes of a shard's index (with its crc32c) at the end of the shard."""
    return 16 * slots + 4


def parse_index(tail: bytes, slots: int, where: str) -> np.ndarray:
    """The (offset, length) pairs [slots, 2] from a shard's last ``index_size`` bytes."""
    size = index_size(slots)
    if tail is None or len(tail) < size:
        raise ShardError(f"{where} is truncated: its index ({size:,} bytes at the end) is incomplete")
    tail = tail[-size:]
    if crc32c(tail[:-4]) != int(np.frombuffer(tail[-4:], dtype="<u4")[0]):
        raise ShardError(f"{where}: the shard's index fails its checksum (damaged or truncated)")
    return np.frombuffer(tail[:-4], dtype="<u8").reshape(slots, 2)


def _chunks(blobs: list[bytes], nbytes: int, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Values bytes [n, nbytes] and stored crc32c [n] of chunks given as byte strings, each
    checked against its checksum."""
    if any(len(b) != nbytes + 4 for b in blobs):
        raise ShardError(f"{where}: a chunk has the wrong size (damaged, or another model's)")
    rows = np.frombuffer(b"".join(blobs), dtype=np.uint8).reshape(len(blobs), nbytes + 4)
    stored = rows[:, nbytes:].copy().view("<u4").ravel().astype(np.uint32)
    actual = np.fromiter((crc32c(r) for r in rows[:, :nbytes]), dtype=np.uint32, count=len(rows))
    if not np.array_equal(stored, actual):
        raise ShardError(f"{where}: a chunk fails its checksum (the shard was changed or damaged)")
    return rows[:, :nbytes], stored


def decode(data: bytes | None, slots: int, width: int, dtype: np.dtype, where: str,
           compressor=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A whole shard's (values [slots, width], present [slots], crc32c [slots]), decompressed
    by ``compressor`` first if given; absent slots hold zeros and crc 0. Every chunk's
    checksum and the index's are verified."""
    dtype = np.dtype(dtype).newbyteorder("<")
    if data is None:
        raise ShardError(f"{where} is missing")
    if compressor is not None:
        data = decompress(compressor, data, where)
    index = parse_index(data, slots, where)
    present = index[:, 0] != EMPTY
    values = np.zeros((slots, width), dtype=dtype)
    crcs = np.zeros(slots, dtype=np.uint32)
    if present.any():
        offsets, lengths = index[present, 0], index[present, 1]
        nbytes = width * dtype.itemsize
        body = len(data) - index_size(slots)
        if (lengths != nbytes + 4).any() or (offsets + lengths > body).any():
            raise ShardError(f"{where}: the index points outside the shard or at chunks of the wrong "
                             "size (damaged, or another model's)")
        blobs = [data[o:o + nbytes + 4] for o in offsets.tolist()]
        raw, stored = _chunks(blobs, nbytes, where)
        values[present] = raw.copy().view(dtype).reshape(-1, width)
        crcs[present] = stored
    return values.astype(dtype.newbyteorder("="), copy=False), present, crcs


class ShardedArray:
    """A per-partition array ``[*grid, width]`` under ``location`` (its zarr.json, its shards),
    each shard compressed whole by ``compressor`` (a numcodecs Zstd) if one is given."""

    def __init__(self, location: Location, shards: ShardGrid, width: int, dtype="float32",
                 compressor=None):
        self.location, self.grid, self.width = location, shards, int(width)
        self.dtype = np.dtype(dtype)
        self.compressor = compressor

    def metadata(self, attributes: dict | None = None) -> bytes:
        """This array's zarr.json, made by zarr itself (the codecs above, in its own words):
        ``codecs: [sharding_indexed]``, or ``[sharding_indexed, zstd]`` for a compressor."""
        import json

        import zarr
        from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec, ZstdCodec
        from zarr.storage import MemoryStore

        store = MemoryStore()
        inner = (1,) * len(self.grid.factors) + (self.width,)
        sharding = ShardingCodec(chunk_shape=inner, codecs=[BytesCodec(), Crc32cCodec()],
                                 index_codecs=[BytesCodec(), Crc32cCodec()])
        outer = [] if self.compressor is None else [ZstdCodec(level=self.compressor.level)]
        with _quiet():
            zarr.create_array(store, shape=self.grid.factors + (self.width,), dtype=self.dtype,
                              chunks=self.grid.block + (self.width,), serializer=sharding,
                              compressors=outer, fill_value=0, attributes=attributes)
        return dumps(json.loads(store._store_dict["zarr.json"].to_bytes()), self.compressor is not None)

    def encode(self, values: np.ndarray, present: np.ndarray) -> tuple[bytes, np.ndarray]:
        """One shard's bytes and its chunks' crc32c (``encode``, with this array's codecs)."""
        return encode(values.astype(self.dtype, copy=False), present, self.compressor)

    def write_shard(self, shard: int, values: np.ndarray, present: np.ndarray,
                    sync_to_disk: bool = False) -> np.ndarray:
        """Write one shard from ``values`` [slots, width] and ``present`` [slots]; returns the
        crc32c of each present chunk."""
        data, crcs = self.encode(values, present)
        self.location.write(self.grid.key(shard), data, sync_to_disk)
        return crcs

    def read_shard(self, shard: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A whole shard: (values [slots, width], present [slots], crc32c [slots])."""
        key = self.grid.key(shard)
        return decode(self.location.read(key), self.grid.slots, self.width, self.dtype,
                      f"{self.location}/{key}", self.compressor)

    def read_slots(self, shard: int, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Chunks ``slots`` of one shard, by byte range (a compressed shard: read whole):
        (values [n, width], crc32c [n]); a missing chunk is a ``ShardError``."""
        if self.compressor is not None:
            values, present, crcs = self.read_shard(shard)
            if not present[slots].all():
                raise ShardError(f"{self.location}/{self.grid.key(shard)}: a partition the model "
                                 "lists is not in its shard")
            return values[slots], crcs[slots]
        key, where = self.grid.key(shard), f"{self.location}/{self.grid.key(shard)}"
        index = parse_index(self.location.read_suffix(key, index_size(self.grid.slots)),
                            self.grid.slots, where)[slots]
        if (index[:, 0] == EMPTY).any():
            raise ShardError(f"{where}: a partition the model lists is not in its shard")
        nbytes = self.width * self.dtype.itemsize
        ranges = [(int(o), int(o + n)) for o, n in index]
        blobs = self.location.read_ranges(key, ranges)
        if blobs is None:
            raise ShardError(f"{where} is missing")
        raw, stored = _chunks(blobs, nbytes, where)
        return raw.copy().view(self.dtype.newbyteorder("<")).reshape(-1, self.width), stored


@contextmanager
def _quiet():
    """zarr warns that a codec after ``sharding_indexed`` disables partial reads: chosen here
    (a quantized shard is read whole)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*disables partial reads.*")
        yield


def owners(grid, workers: int) -> tuple[ShardGrid, list[list[int]]]:
    """The shards of a ``workers``-worker run on ``grid`` and each worker's partitions: whole
    shards, spatially compact, balanced within a shard (``geometry.shard``)."""
    from ..geometry import shard

    shards = ShardGrid.for_grid(grid.factors, workers)
    return shards, shard(grid, workers, shards.block)
