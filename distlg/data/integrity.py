"""Chunks that are all there and whole, or a line that names the one that is not.

Zarr reads a missing chunk as its fill value (zeros) and a damaged one as whatever its codec
makes of it (Blosc has no checksum: a truncated or garbled chunk often decodes to wrong values
without an error). A store that trains a model on zeros is a silent wrong result, so stores
written now carry two guarantees, recorded in their attributes as ``integrity``:

- ``every_chunk``: every chunk is written, all-zero ones too (zarr's ``write_empty_chunks``),
  so a chunk key that is absent (deleted, a failed copy, an HTTP 404, a folder where a file
  should be) is an error, not zeros: ``CheckedStore`` raises it, naming the key;
- ``checksum: crc32c``: each chunk's compressed bytes end in a crc32c (Zarr's ``crc32c``
  codec), so a truncated or garbled chunk fails to decode; ``read_or_name`` turns that, and
  any other decoding failure, into one line naming the chunk.

Stores written before these guarantees (no ``integrity`` attribute) read as they always did.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np
from zarr.storage import WrapperStore

from .signal import StoreError

INTEGRITY = {"every_chunk": True, "checksum": "crc32c"}
"""What a store written by this distlg guarantees (its ``integrity`` attribute)."""
CONFIG = {"write_empty_chunks": True}
"""Zarr array settings under which every chunk is written."""


def recorded(dtype, chunks: Sequence[int]) -> dict:
    """The ``integrity`` attribute of a new store: the guarantees, and the dtype and chunk
    shape it was written with (``zarr.json`` edited afterwards no longer matches them)."""
    return {**INTEGRITY, "dtype": np.dtype(dtype).name, "chunks": [int(c) for c in chunks]}


def check_metadata(array, integrity: dict | None, where: str) -> None:
    """Refuse a store whose ``zarr.json`` gives a chunk or shard shape with a zero, or another
    dtype or chunk shape than the one it was written with."""
    for name, shape in (("chunk", array.chunks), ("shard", array.shards)):
        if shape is not None and min(shape) < 1:
            raise StoreError(f"{where}: zarr.json gives a {name} shape of {tuple(shape)}; a store "
                             "has none with an empty axis: its metadata was changed, ingest it again")
    actual = {"dtype": np.dtype(array.dtype).name, "chunks": [int(c) for c in array.chunks]}
    for key, value in actual.items():
        if integrity and key in integrity and integrity[key] != value:
            raise StoreError(f"{where}: zarr.json gives {key} {value}, but the store was written "
                             f"with {integrity[key]}: its metadata was changed, ingest it again")


def is_chunk(key: str) -> bool:
    """Whether ``key`` names a chunk (or shard) of the store's array: ``c/...``."""
    return key == "c" or key.startswith("c/")


class CheckedStore(WrapperStore):
    """A Zarr store whose missing chunks are errors once ``strict`` is set (the store says
    every chunk was written); a key that cannot be read at all (a folder) is one too."""

    def __init__(self, store, where: str, strict: bool = False):
        super().__init__(store)
        self.where, self.strict = where, strict

    def _with_store(self, store) -> "CheckedStore":
        return type(self)(store, self.where, self.strict)

    async def get(self, key, prototype, byte_range=None):
        try:
            found = await self._store.get(key, prototype, byte_range)
        except (IsADirectoryError, PermissionError) as exc:
            raise StoreError(f"{self.where}: cannot read {key} ({exc.strerror}); the store is "
                             "damaged: ingest it again") from None
        if found is None and self.strict and is_chunk(key):
            raise StoreError(f"{self.where}: chunk {key} is missing (deleted, or lost in a copy); "
                             "the store is damaged: ingest it again")
        return found


def missing_chunks(root, array) -> tuple[list[str], int]:
    """The chunk (or shard) keys of the local store at ``root`` that have no file, and how
    many keys the array has: what ``distlg info`` checks of a store that records every chunk."""
    from pathlib import Path

    unit = tuple(array.shards or array.chunks)
    counts = [math.ceil(n / u) for n, u in zip(array.shape, unit)]
    keys = ("c/" + "/".join(map(str, index)) for index in itertools.product(*map(range, counts)))
    return [k for k in keys if not (Path(root) / k).is_file()], math.prod(counts)


def read_or_name(array, box: Sequence[tuple[int, int]], where: str) -> np.ndarray:
    """``array``'s values in ``box``; a chunk that fails to decode is one ``StoreError`` that
    names its key (found by reading the box's chunks one at a time, on the failure path only)."""
    try:
        return np.asarray(array[tuple(slice(a, b) for a, b in box)])
    except StoreError:
        raise
    except Exception as exc:  # a codec's error: checksum, Blosc, a size that does not fit
        key, reason = _failing_chunk(array, box), _first_line(exc)
        if "checksum" in reason:
            reason = "its crc32c checksum does not match: truncated or garbled"
        what = f"chunk {key}" if key else f"the chunks of {_box_text(box)}"
        raise StoreError(f"{where}: {what} cannot be decoded ({reason}); the store is damaged: "
                         "ingest it again") from None


def _failing_chunk(array, box) -> str | None:
    """The key of the first chunk (or shard) in ``box`` that does not read, or None."""
    unit = tuple(array.shards or array.chunks)
    ranges = [range(a // u, max(a, b - 1) // u + 1) for (a, b), u in zip(box, unit)]
    for index in itertools.product(*ranges, *[range(math.ceil(n / u)) for n, u in
                                              zip(array.shape[len(box):], unit[len(box):])]):
        part = tuple(slice(i * u, min((i + 1) * u, n)) for i, u, n in zip(index, unit, array.shape))
        try:
            np.asarray(array[part])
        except Exception:
            return "c/" + "/".join(map(str, index))
    return None


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _box_text(box) -> str:
    return ",".join(f"{a}:{b}" for a, b in box)
