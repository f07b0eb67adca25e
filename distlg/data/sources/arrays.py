"""Arrays: .npy files and raw files (--shape, --dtype), read with plain file reads. By their
dimensions: 1 audio, 2 image, 3 volume, 4 volume with channels; ``kind`` for others."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import numpy as np

from ...defaults import KINDS
from .base import (
    IngestError,
    Source,
    SourceOptions,
    array_source,
    check_dtype,
    choose_kind,
    identity,
    with_channels,
)

RAW_SUFFIXES = (".raw", ".bin", ".dat")


def array_kind(ndim: int, options: SourceOptions, path: Path) -> str:
    if options.kind is not None:
        return choose_kind(options.kind, KINDS, str(path))
    kind = {1: "audio", 2: "image", 3: "volume", 4: "volume"}.get(ndim)
    if kind is None:
        raise IngestError(f"{path}: a {ndim}-dimensional array is not a signal; pass --kind")
    return kind


def array_meta(kind: str, options: SourceOptions) -> dict:
    if kind == "video" and options.fps:
        return {"fps": options.fps}
    if kind == "audio" and options.sample_rate:
        return {"sample_rate": options.sample_rate}
    return {}


def _file_source(path: Path, offset: int, shape: tuple[int, ...], file_dtype: np.dtype,
                 options: SourceOptions) -> Source:
    """A C-ordered array stored at ``offset`` in ``path``, read with plain file reads (no memory
    map, so the pages read do not stay in this process) and converted to native byte order."""
    kind = array_kind(len(shape), options, path)
    store_shape = with_channels(shape, kind, path)
    dtype = check_dtype(file_dtype, path)
    row = math.prod(shape[1:])

    def slabs(start: int, rows: int) -> Iterator[np.ndarray]:
        with open(path, "rb") as fh:
            fh.seek(offset + start * row * file_dtype.itemsize)
            for a in range(start, shape[0], rows):
                k = min(rows, shape[0] - a)
                data = np.fromfile(fh, file_dtype, count=k * row)
                if data.size != k * row:
                    raise IngestError(f"{path}: file ends early, in row {a + data.size // row}")
                yield data.astype(dtype, copy=False).reshape((k,) + store_shape[1:])

    return Source(str(path), path.stat().st_size, kind, store_shape, dtype, slabs, identity(path),
                  array_meta(kind, options))


def open_npy(path: Path, options: SourceOptions) -> Source:
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(fh)
            offset = fh.tell()
    except ValueError as exc:
        raise IngestError(f"{path}: not a readable .npy file ({exc})") from None
    if not shape:
        raise IngestError(f"{path}: holds a single number, not a signal")
    if fortran:  # rare: columns first; read it through a memory map
        array = np.load(path, mmap_mode="r")
        kind = array_kind(array.ndim, options, path)
        return array_source(str(path), path.stat().st_size, kind, array, identity(path),
                            array_meta(kind, options))
    return _file_source(path, offset, tuple(shape), dtype, options)


def open_raw(path: Path, options: SourceOptions) -> Source:
    if not options.shape or not options.dtype:
        raise IngestError(f"{path}: a raw file needs --shape and --dtype")
    try:
        dtype = np.dtype(options.dtype)
    except TypeError:
        raise IngestError(f"{path}: --dtype {options.dtype!r} is not a numpy type") from None
    shape = tuple(int(d) for d in options.shape)
    if min(shape) < 1:
        raise IngestError(f"{path}: --shape must be positive, got {list(shape)}")
    expected, size = math.prod(shape) * dtype.itemsize, path.stat().st_size
    if size != expected:
        raise IngestError(f"{path}: holds {size:,} bytes, but shape {list(shape)} of {dtype} "
                          f"needs {expected:,}")
    return _file_source(path, 0, shape, dtype, options)
