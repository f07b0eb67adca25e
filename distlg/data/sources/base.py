"""What every source reader shares: the options they read, the ``Source`` they return, the
error they raise and the checks of sample types and shapes."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ...defaults import KINDS
from ...errors import DistlgError
from ..signal import AXES

DTYPES = ("bool", "uint8", "uint16", "uint32", "int8", "int16", "int32", "float16", "float32",
          "float64")
"""Sample types a source may have: all of them convert to float32 exactly or nearly so (bool is
stored as uint8, ``mask_as_bytes``)."""
SPACE_UNITS = ("angstrom", "nanometer", "micrometer", "millimeter", "centimeter", "meter")
"""Units of --voxel-size: OME-NGFF's spatial units."""


MAX_FPS = 1000.0
MAX_SAMPLE_RATE = float(2**32 - 1)
"""Rates a store may record: what an .mp4 plays and a WAV header holds (renders write them)."""


class IngestError(DistlgError):
    """A source that cannot be ingested as given."""


@dataclass
class SourceOptions:
    """How to read a source where the file does not say."""

    kind: str | None = field(default=None, metadata={"choices": KINDS})
    """Read the source as this kind: a folder of frames or a TIFF stack as a volume (z, y, x)
    instead of a video; an array as any kind whose axes match. Default: from the source."""
    shape: Sequence[int] | None = None
    """Array shape of a raw file, first axis first (channels last, if any)."""
    dtype: str | None = field(default=None, metadata={"metavar": "TYPE"})
    """Sample type of a raw file: uint8, uint16, int16, float32, ... ('<u2' or '>u2' for an
    explicit byte order)."""
    fps: float | None = None
    """Frame rate to record for frames, TIFF stacks and arrays read as video (video files
    record their own)."""
    sample_rate: float | None = None
    """Sample rate to record for arrays read as audio (WAV files record their own)."""
    voxel_size: Sequence[float] | None = field(default=None, metadata={"metavar": "SIZE"})
    """Physical size of one sample along each space axis (z y x for a volume, y x for an image
    or a video's frames), in --voxel-unit: recorded for OME-Zarr renders (napari,
    neuroglancer), which then show the signal at its true proportions."""
    voxel_unit: str = field(default="micrometer", metadata={"choices": SPACE_UNITS})
    """Unit of --voxel-size."""

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in KINDS:
            raise IngestError(f"unknown signal kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        for name, value, most in (("fps", self.fps, MAX_FPS), ("sample-rate", self.sample_rate,
                                                               MAX_SAMPLE_RATE)):
            if value is not None and not (math.isfinite(value) and 0 < value <= most):
                raise IngestError(f"--{name} {value}: give a number above 0 and at most {most:,.0f}")
        if self.voxel_size is not None:
            sizes = [float(v) for v in self.voxel_size]
            if not all(math.isfinite(v) and v > 0 for v in sizes):
                raise IngestError(f"--voxel-size needs positive sizes, got {sizes}")
            self.voxel_size = sizes

    def spacing(self, kind: str, factor: int = 1) -> dict:
        """The store's record of --voxel-size (one size per space axis of ``kind``; times
        ``factor`` for a store downsampled by it), or none."""
        if self.voxel_size is None:
            return {}
        space = [a for a in AXES[kind] if a != "t"]
        if len(self.voxel_size) != len(space):
            raise IngestError(f"--voxel-size needs {len(space)} sizes ({' '.join(space)}) for a "
                              f"{kind}, got {len(self.voxel_size)}")
        return {"voxel_size": [v * factor for v in self.voxel_size], "voxel_unit": self.voxel_unit}


@dataclass
class Source:
    """A readable source: what it becomes, and how to read it a slab at a time."""

    path: str
    nbytes: int
    """Size of the source on disk (all files of a folder)."""
    kind: str
    shape: tuple[int, ...]
    """Store shape [*dims, channels]; for some videos the first axis is an estimate."""
    dtype: np.dtype
    slabs: Callable[[int, int], Iterator[np.ndarray]]
    """``slabs(start, rows)``: consecutive arrays of ``rows`` first-axis rows (the last may be
    shorter) from row ``start`` to the end of the source."""
    identity: dict
    """What identifies the source's content (sizes, times): a changed source restarts ingest."""
    meta: dict = field(default_factory=dict)
    value_range: tuple[float, float] | None = None
    """Raw values that map to -1 and +1 where the values do not say (a noisy copy keeps its
    clean source's range); None: from the dtype or the values (``signal.default_range``)."""
    attach: Callable[[Path], None] | None = None
    """Writes what the store holds besides the signal into its folder (a CT store's
    sinogram), once the signal is written and before the store is marked complete."""


def identity(path: Path) -> dict:
    """Name, size and modification time: what says a file changed."""
    stat = path.stat()
    return {"name": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def choose_kind(asked: str | None, allowed: Sequence[str], what: str) -> str:
    """``asked`` if it is allowed for this source (else an error), or the source's default."""
    if asked is None:
        return allowed[0]
    if asked not in allowed:
        raise IngestError(f"{what}: cannot be read as {asked!r} (it can be: {', '.join(allowed)})")
    return asked


def check_dtype(dtype: np.dtype, path: Path | str) -> np.dtype:
    """``dtype`` in native byte order, if a store may hold it."""
    dtype = np.dtype(dtype)
    if dtype.name not in DTYPES:
        raise IngestError(f"{path}: unsupported sample type {dtype}; use one of {', '.join(DTYPES)}")
    return dtype.newbyteorder("=")


def with_channels(shape: tuple[int, ...], kind: str, path: Path | str) -> tuple[int, ...]:
    """[*dims, channels] for an array of ``shape`` read as ``kind`` (channels 1 if absent)."""
    n = len(AXES[kind])
    if len(shape) == n:
        return tuple(shape) + (1,)
    if len(shape) == n + 1:
        return tuple(shape)
    raise IngestError(f"{path}: an array of shape {tuple(shape)} cannot be read as {kind} "
                      f"([{', '.join(AXES[kind])}] or [{', '.join(AXES[kind])}, channels])")


def array_source(path: str, nbytes: int, kind: str, array: np.ndarray, ident: dict,
                 meta: dict) -> Source:
    """A source over an array already in memory or memory-mapped."""
    dtype = check_dtype(array.dtype, path)
    shape = with_channels(array.shape, kind, path)

    def slabs(start: int, rows: int) -> Iterator[np.ndarray]:
        for a in range(start, shape[0], rows):
            yield np.asarray(array[a:a + rows], dtype=dtype).reshape((-1,) + shape[1:])

    return Source(path, nbytes, kind, shape, dtype, slabs, ident, meta)


def mask_as_bytes(src: Source) -> Source:
    """``src``, or for a bool source (a mask) the same samples as uint8 0 and 1 with value range
    (0, 1): what a store holds and a render writes back."""
    if src.dtype != np.bool_:
        return src
    read = src.slabs

    def slabs(start: int, rows: int) -> Iterator[np.ndarray]:
        for slab in read(start, rows):
            yield slab.astype(np.uint8)

    return replace(src, dtype=np.dtype(np.uint8), slabs=slabs, value_range=(0.0, 1.0))


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (decoders write long ones)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
