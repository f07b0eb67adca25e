"""Ingest: read a source once, slab by slab, into a signal store (``distlg ingest``).

What SOURCE may be, and the signal it becomes (``--kind`` changes it where it says so):

    video file (.mp4 .mkv .webm .mov .avi)   PyAV-decoded RGB frames             video (t, y, x)
    folder of numbered frames (PNG, JPEG, TIFF), natural order        video, or --kind volume
    TIFF stack (one 2-D page per slice)                          volume, or --kind video;
                                                                 a single page: image
    .npy array; raw file (--shape, --dtype)   by dimensions: 1 audio, 2 image, 3 volume,
                                              4 volume with channels; --kind for others
    image (.png .jpg .jpeg)                                                      image (y, x)
    .wav (PCM or float)                                                          audio (t)
    builtin:NAME[@HxW]                                                           image

Memory: one slab is held at a time, as many rows of the first axis as a chunk is deep (frames,
slices, samples); images are read whole. After every slab the store records how far it got;
run again with the same source and settings, an interrupted ingest resumes there, and with a
different source or settings it restarts. The completion marker is written last.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..errors import DistlgError
from ..geometry import PartitionGrid
from ..plan import default_factors, partition_size_for
from . import store
from .signal import AXES, KINDS, builtin, default_range

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TIFF_SUFFIXES = (".tif", ".tiff")
FRAME_SUFFIXES = IMAGE_SUFFIXES + TIFF_SUFFIXES
RAW_SUFFIXES = (".raw", ".bin", ".dat")
DTYPES = ("bool", "uint8", "uint16", "uint32", "int8", "int16", "int32", "float16", "float32",
          "float64")
"""Sample types a store may hold: all of them convert to float32 exactly or nearly so."""


class IngestError(DistlgError):
    """A source that cannot be ingested as given."""


@dataclass
class IngestOptions:
    kind: str | None = None
    """Signal kind to read the source as (default: from the source)."""
    shape: Sequence[int] | None = None
    """Array shape of a raw file ([*dims] or [*dims, channels])."""
    dtype: str | None = None
    """Sample type of a raw file (numpy name, e.g. uint8, <u2, float32)."""
    factors: Sequence[int] | None = None
    """Partition factors training is expected to use (chunks align with them)."""
    partition_size: Sequence[int] | None = None
    """Target partition size when no factors are given (training's default otherwise)."""
    chunks: Sequence[int] | None = None
    """Chunk shape per signal axis, overriding the partition-aligned choice."""
    fps: float | None = None
    """Frame rate to record for sources that carry none (frame folders, arrays)."""
    sample_rate: float | None = None
    """Sample rate to record for audio arrays."""
    overwrite: bool = False
    """Replace a complete store that holds another signal."""
    progress: bool = True
    """Show a progress bar (on a terminal)."""


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


@dataclass
class IngestResult:
    path: Path
    status: str
    """'written', 'resumed' or 'up to date'."""
    shape: tuple[int, ...]
    dtype: str
    chunks: tuple[int, ...]
    chunking: dict
    raw_bytes: int
    stored_bytes: int
    seconds: float


# -- entry point -----------------------------------------------------------------------------------
def ingest(source: str | Path, path: str | Path, options: IngestOptions | None = None) -> IngestResult:
    """Write the signal of ``source`` into the store at ``path`` (resuming an interrupted one)."""
    t0 = time.perf_counter()
    options = options or IngestOptions()
    src = open_source(source, options)
    chunking = plan_chunks(src, options)
    path = Path(path)
    array, status = _prepare(path, src, chunking, options)
    if status != "up to date":
        _copy(array, src, options)
    return IngestResult(path, status, tuple(array.shape), np.dtype(array.dtype).name,
                        tuple(array.chunks), chunking, math.prod(array.shape) * array.dtype.itemsize,
                        store.stored_bytes(path), time.perf_counter() - t0)


def plan_chunks(src: Source, options: IngestOptions) -> dict:
    """The partition grid ingest assumes and the chunk shape aligned with it."""
    dims = src.shape[:-1]
    size = _per_axis(options.partition_size, len(dims), "--partition-size") \
        or partition_size_for(src.kind, dims)
    factors = _per_axis(options.factors, len(dims), "--factors") or default_factors(dims, size)
    grid = PartitionGrid(dims, factors)
    chunks = _per_axis(options.chunks, len(dims), "--chunks") or store.chunk_shape(
        dims, grid.part_shape, src.shape[-1] * src.dtype.itemsize)
    return {"partition_size": list(size), "factors": list(grid.factors),
            "part_shape": list(grid.part_shape), "chunks": list(chunks)}


def _per_axis(values: Sequence[int] | None, ndim: int, name: str) -> tuple[int, ...] | None:
    if not values:
        return None
    values = [int(v) for v in values]
    values = values * ndim if len(values) == 1 else values
    if len(values) != ndim or min(values) < 1:
        raise IngestError(f"{name} needs 1 or {ndim} positive values for this {ndim}-axis signal, "
                          f"got {values}")
    return tuple(values)


def _prepare(path: Path, src: Source, chunking: dict, options: IngestOptions):
    """Open the store to resume, or (re)create it. Returns (array, status)."""
    fingerprint = json.loads(json.dumps({**src.identity, "kind": src.kind, **chunking}))
    array = store.open_array(path, mode="r+")
    if array is not None:
        desc = store.info(array)
        same = desc["ingest"].get("fingerprint") == fingerprint
        if desc.get("complete"):
            if same and not options.overwrite:
                return array, "up to date"
            if not options.overwrite:
                raise IngestError(f"{path} already holds a complete signal (from "
                                  f"{desc['meta'].get('source')}); pass --overwrite to replace it")
        elif same and not options.overwrite:
            return array, "resumed"
    if path.exists():
        store.remove(path)
    info = {"kind": src.kind, "axes": list(AXES[src.kind]), "complete": False,
            "meta": {**src.meta, "source": Path(src.path).name, "source_bytes": src.nbytes},
            "chunking": chunking,
            "ingest": {"fingerprint": fingerprint, "done": 0, "low": None, "high": None}}
    path.parent.mkdir(parents=True, exist_ok=True)
    return store.create(path, src.shape, src.dtype, chunking["chunks"], AXES[src.kind], info), "written"


def _copy(array, src: Source, options: IngestOptions) -> None:
    """Stream the source into ``array`` from where it stopped; write the marker last."""
    from tqdm.auto import tqdm

    progress = store.info(array)["ingest"]
    done, low, high = progress["done"], progress["low"], progress["high"]
    unit = {"video": "frame", "volume": "slice", "image": "row", "audio": "sample"}[src.kind]
    bar = tqdm(total=src.shape[0], initial=done, unit=unit, unit_scale=src.kind == "audio",
               desc=f"ingest {Path(src.path).name}", disable=None if options.progress else True)
    with bar:
        for slab in src.slabs(done, array.chunks[0]):
            end = done + len(slab)
            if end > array.shape[0]:  # more frames than the container announced
                array.resize((max(end, round(array.shape[0] * 1.25)),) + array.shape[1:])
            array[done:end] = slab
            low, high = _extend_range(low, high, slab, src.path, done)
            done = end
            store.update(array, ingest={**progress, "done": done, "low": low, "high": high})
            bar.update(len(slab))
    if done == 0:
        raise IngestError(f"{src.path}: holds no {unit}s")
    if done != array.shape[0]:
        array.resize((done,) + array.shape[1:])
    value_range = default_range(np.asarray([low, high], dtype=src.dtype), src.kind)
    store.update(array, value_range=list(value_range), complete=True)


def _extend_range(low, high, slab: np.ndarray, path: str, row: int) -> tuple[float, float]:
    """Running minimum and maximum; floating-point sources must be finite."""
    lo, hi = float(slab.min()), float(slab.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise IngestError(f"{path}: non-finite values (NaN or infinity) in rows {row}-{row + len(slab) - 1}")
    return (lo if low is None else min(low, lo)), (hi if high is None else max(high, hi))


# -- sources ---------------------------------------------------------------------------------------
def open_source(spec: str | Path, options: IngestOptions) -> Source:
    """The source that ``spec`` names (see the module docstring), with its shape and dtype."""
    spec = str(spec)
    if spec.startswith("builtin:"):
        signal = builtin(spec[len("builtin:"):])
        _kind(options.kind, ("image",), spec)
        return _array_source(spec, 0, "image", signal.data, {"builtin": spec}, {})
    path = Path(spec)
    if not path.exists():
        raise IngestError(f"{path}: no such file or folder")
    if path.is_dir():
        return _frames(path, options)
    suffix = path.suffix.lower()
    readers = {**dict.fromkeys(VIDEO_SUFFIXES, _video), **dict.fromkeys(IMAGE_SUFFIXES, _image),
               **dict.fromkeys(TIFF_SUFFIXES, _tiff), **dict.fromkeys(RAW_SUFFIXES, _raw),
               ".npy": _npy, ".wav": _wav}
    if suffix not in readers:
        raise IngestError(f"{path}: unsupported source type {suffix or '(no suffix)'}; use a video "
                          f"({', '.join(VIDEO_SUFFIXES)}), a folder of frames, .npy, raw "
                          f"({', '.join(RAW_SUFFIXES)}), TIFF, PNG/JPEG or .wav")
    return readers[suffix](path, options)


def _identity(path: Path) -> dict:
    stat = path.stat()
    return {"name": path.name, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _kind(asked: str | None, allowed: Sequence[str], what: str) -> str:
    """``asked`` if it is allowed for this source (else an error), or the source's default."""
    if asked is None:
        return allowed[0]
    if asked not in allowed:
        raise IngestError(f"{what}: cannot be read as {asked!r} (it can be: {', '.join(allowed)})")
    return asked


def _check_dtype(dtype: np.dtype, path: Path | str) -> np.dtype:
    dtype = np.dtype(dtype)
    if dtype.name not in DTYPES:
        raise IngestError(f"{path}: unsupported sample type {dtype}; use one of {', '.join(DTYPES)}")
    return dtype.newbyteorder("=")


def _with_channels(shape: tuple[int, ...], kind: str, path: Path | str) -> tuple[int, ...]:
    """[*dims, channels] for an array of ``shape`` read as ``kind`` (channels 1 if absent)."""
    n = len(AXES[kind])
    if len(shape) == n:
        return tuple(shape) + (1,)
    if len(shape) == n + 1:
        return tuple(shape)
    raise IngestError(f"{path}: an array of shape {tuple(shape)} cannot be read as {kind} "
                      f"([{', '.join(AXES[kind])}] or [{', '.join(AXES[kind])}, channels])")


def _array_source(path: str, nbytes: int, kind: str, array: np.ndarray, identity: dict,
                  meta: dict) -> Source:
    """A source over an array already in memory or memory-mapped."""
    dtype = _check_dtype(array.dtype, path)
    shape = _with_channels(array.shape, kind, path)

    def slabs(start: int, rows: int) -> Iterator[np.ndarray]:
        for a in range(start, shape[0], rows):
            yield np.asarray(array[a:a + rows], dtype=dtype).reshape((-1,) + shape[1:])

    return Source(path, nbytes, kind, shape, dtype, slabs, identity, meta)


def _array_kind(ndim: int, options: IngestOptions, path: Path) -> str:
    if options.kind is not None:
        return _kind(options.kind, KINDS, str(path))
    kind = {1: "audio", 2: "image", 3: "volume", 4: "volume"}.get(ndim)
    if kind is None:
        raise IngestError(f"{path}: a {ndim}-dimensional array is not a signal; pass --kind")
    return kind


def _array_meta(kind: str, options: IngestOptions) -> dict:
    if kind == "video" and options.fps:
        return {"fps": options.fps}
    if kind == "audio" and options.sample_rate:
        return {"sample_rate": options.sample_rate}
    return {}


def _file_source(path: Path, offset: int, shape: tuple[int, ...], file_dtype: np.dtype,
                 options: IngestOptions) -> Source:
    """A C-ordered array stored at ``offset`` in ``path``, read with plain file reads (no memory
    map, so the pages read do not stay in this process) and converted to native byte order."""
    kind = _array_kind(len(shape), options, path)
    store_shape = _with_channels(shape, kind, path)
    dtype = _check_dtype(file_dtype, path)
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

    return Source(str(path), path.stat().st_size, kind, store_shape, dtype, slabs, _identity(path),
                  _array_meta(kind, options))


def _npy(path: Path, options: IngestOptions) -> Source:
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
        kind = _array_kind(array.ndim, options, path)
        return _array_source(str(path), path.stat().st_size, kind, array, _identity(path),
                             _array_meta(kind, options))
    return _file_source(path, offset, tuple(shape), dtype, options)


def _raw(path: Path, options: IngestOptions) -> Source:
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


def _read_image(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    try:
        return np.asarray(iio.imread(path))
    except Exception as exc:  # Pillow, tifffile and imageio raise many types for a bad file
        raise IngestError(f"{path}: not a readable image ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _image(path: Path, options: IngestOptions) -> Source:
    _kind(options.kind, ("image",), str(path))
    image = _read_image(path)
    return _array_source(str(path), path.stat().st_size, "image", image, _identity(path), {})


def _natural_key(path: Path) -> list:
    """Order frame names as people number them: frame2 before frame10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def _frames(path: Path, options: IngestOptions) -> Source:
    kind = _kind(options.kind, ("video", "volume"), f"{path} (a folder of frames)")
    files = sorted((p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES
                    and not p.name.startswith(".")), key=_natural_key)
    if not files:
        raise IngestError(f"{path}: no PNG, JPEG or TIFF frames in this folder")
    first = _read_image(files[0])
    dtype = _check_dtype(first.dtype, files[0])
    shape = (len(files),) + _with_channels(first.shape, "image", files[0])

    def slabs(start: int, rows: int) -> Iterator[np.ndarray]:
        for a in range(start, len(files), rows):
            batch = files[a:a + rows]
            out = np.empty((len(batch),) + shape[1:], dtype)
            for i, f in enumerate(batch):
                frame = _read_image(f)
                if frame.shape[:2] + (frame.shape[2:] or (1,)) != shape[1:] or frame.dtype != dtype:
                    raise IngestError(f"{f}: frame of shape {frame.shape} and type {frame.dtype} "
                                      f"differs from {files[0].name} ({first.shape}, {first.dtype}); "
                                      "all frames must match")
                out[i] = frame.reshape(shape[1:])
            yield out

    stats = [f.stat() for f in files]
    identity = {"name": path.name, "files": len(files), "size": sum(s.st_size for s in stats),
                "mtime_ns": max(s.st_mtime_ns for s in stats), "first": files[0].name,
                "last": files[-1].name}
    meta = {"fps": options.fps} if options.fps and kind == "video" else {}
    return Source(str(path), identity["size"], kind, shape, dtype, slabs, identity, meta)


def _tiff(path: Path, options: IngestOptions) -> Source:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, full, dtype, page = series.axes, tuple(series.shape), series.dtype, series.pages[0].shape
    except Exception as exc:  # tifffile raises its own and numpy's errors for a bad file
        raise IngestError(f"{path}: not a readable TIFF file ({_first_line(exc)})") from None
    leading = full[:len(full) - len(page)]
    if len(leading) > 1:
        raise IngestError(f"{path}: a TIFF of axes {axes} (shape {full}); only a stack of 2-D pages "
                          "(one slice or frame per page) can be ingested")
    if not leading:
        _kind(options.kind, ("image",), f"{path} (a single-page TIFF)")
        return _image(path, options)
    kind = _kind(options.kind, ("volume", "video"), f"{path} (a TIFF stack)")
    dtype = _check_dtype(dtype, path)
    shape = _with_channels(full, kind, path)

    def slabs(start: int, rows: int) -> Iterator[np.ndarray]:
        with tifffile.TiffFile(path) as tif:
            for a in range(start, shape[0], rows):
                pages = range(a, min(a + rows, shape[0]))
                yield tif.asarray(key=pages, series=0).reshape((len(pages),) + shape[1:])

    meta = {"fps": options.fps} if options.fps and kind == "video" else {}
    return Source(str(path), path.stat().st_size, kind, shape, dtype, slabs, _identity(path), meta)


def _wav(path: Path, options: IngestOptions) -> Source:
    from scipy.io import wavfile

    _kind(options.kind, ("audio",), str(path))
    try:
        rate, data = wavfile.read(path, mmap=True)
    except ValueError as exc:
        if "24-bit" not in str(exc):
            raise IngestError(f"{path}: not a readable WAV file ({_first_line(exc)})") from None
        rate, data = wavfile.read(path)  # 24-bit samples cannot be memory-mapped
    except Exception as exc:  # truncated or foreign files raise struct/OS errors
        raise IngestError(f"{path}: not a readable WAV file ({_first_line(exc)})") from None
    return _array_source(str(path), path.stat().st_size, "audio", data, _identity(path),
                         {"sample_rate": int(rate)})


def _video(path: Path, options: IngestOptions) -> Source:
    import av

    _kind(options.kind, ("video",), str(path))
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            seconds = float(stream.duration * stream.time_base) if stream.duration else \
                (container.duration or 0) / 1e6
            frames = stream.frames or round(seconds * fps) or 1
            height, width = stream.codec_context.height, stream.codec_context.width
    except (av.error.FFmpegError, IndexError) as exc:
        raise IngestError(f"{path}: not a readable video ({_first_line(exc) or 'no video stream'})") from None
    shape = (frames, height, width, 3)

    def slabs(start: int, rows: int) -> Iterator[np.ndarray]:
        buf, k, index = np.empty((rows, height, width, 3), np.uint8), 0, 0
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            try:
                for frame in container.decode(stream):
                    if index >= start:
                        if (frame.height, frame.width) != (height, width):
                            raise IngestError(f"{path}: frame {index} is {frame.width}x{frame.height}, "
                                              f"the first is {width}x{height}")
                        buf[k], k = frame.to_ndarray(format="rgb24"), k + 1
                        if k == rows:
                            yield buf
                            k = 0
                    index += 1
            except av.error.FFmpegError as exc:
                raise IngestError(f"{path}: decoding failed at frame {index} ({_first_line(exc)})") from None
        if k:
            yield buf[:k]

    return Source(str(path), path.stat().st_size, "video", shape, np.dtype(np.uint8), slabs,
                  _identity(path), {"fps": fps} if fps else {})
