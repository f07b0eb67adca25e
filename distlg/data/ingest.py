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

``--downsample`` and ``--noise`` (any signal), ``--ct-angles`` (an image) and ``--sinogram`` turn
the source into the input of a downstream task (``distlg.data.degrade``).

Memory: one slab is held at a time, as many rows of the first axis as a chunk is deep (frames,
slices, samples), or with ``--shard`` as a shard is deep (a shard-row: each shard is written
whole, once, as zarr reads back and rewrites a whole shard on every write to it and two writers
of one shard lose data); images are read whole. After every slab the store records how far it got;
run again with the same source and settings, an interrupted ingest resumes there, and with a
different source or settings it restarts. An ingest stopped by the source's content (NaN or
infinity, a file that ends early) removes its store, as a rerun would stop there again. The
completion marker is written last.

STORE may be an s3:// URL (``distlg.data.remote``): the store is written there the same way,
slab by slab, the marker last, so a reader never takes a half-written remote store for a
complete one, and an interrupted remote ingest resumes like a local one. Object storage has no
rename: a complete store that ``--overwrite`` replaces is deleted first and written again in
place (locally it is built beside and swapped in).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import defaults
from ..geometry import PartitionGrid
from ..outputs import check_apart, exclusive, refuse_url
from . import degrade, remote, store
from .signal import AXES, default_range
from .sources.arrays import RAW_SUFFIXES, open_npy, open_raw
from .sources.audio import open_wav
from .sources.base import IngestError, Source, SourceOptions, mask_as_bytes
from .sources.builtin import PREFIX, open_builtin
from .sources.frames import IMAGE_SUFFIXES, TIFF_SUFFIXES, open_frames, open_image, open_tiff
from .sources.video import VIDEO_SUFFIXES, open_video

CHUNK_LIMIT = 512 << 20
"""The most one chunk may hold, uncompressed: ingest, the samplers and renders hold chunks whole
(the aligned choice aims at 0.5-2 MB)."""

__all__ = ["IngestError", "IngestOptions", "IngestResult", "ingest", "open_source", "plan_chunks",
           "plan_shards"]


@dataclass
class IngestOptions(SourceOptions):
    """How to read the source (``SourceOptions``), how to chunk the store, and whether to
    replace one."""

    factors: Sequence[int] | None = None
    """Partitions per axis that training will use (one value, or one per axis); chunks are cut
    along their boundaries."""
    partition_size: Sequence[int] | None = field(default=None, metadata={"table": "partition_size"})
    """Target partition size per axis when --factors is not given (training's default)."""
    chunks: Sequence[int] | None = None
    """Chunk shape per signal axis, overriding the partition-aligned choice."""
    shard: Sequence[str] | None = None
    """`auto`, or a shard shape per signal axis in samples (a multiple of the partition and
    chunk shapes): pack chunks into shards (Zarr's sharding codec), fewer and larger objects
    for very large stores and object storage. `auto` picks blocks of whole partitions of
    128-256 MiB uncompressed, spanning the last axes first; a store of at most 256 MiB is one
    shard. Ingest holds one shard-row in memory (the shard's depth along the first axis, all of
    the other axes), which must fit: at most 2 GiB. Default: no sharding."""
    downsample: int | None = None
    """Store the signal downsampled by this integer factor along every axis, each block of F
    samples per axis averaged (area averaging, the anti-aliasing of a camera's pixels; a
    video's frame rate and a clip's sample rate divided by F), recording the factor and the
    original shape: train on it and `distlg render MODEL --scale F` renders at the original
    resolution (super-resolution)."""
    noise: str | None = field(default=None, metadata={"metavar": "KIND:LEVEL"})
    """Store a noisy copy of the signal: gaussian:SIGMA (standard deviation on the [0, 1] scale)
    or poisson:PEAK (photon counts at a peak of PEAK), clipped to the value range, float32,
    recorded in the store (denoising)."""
    noise_seed: int = 0
    """Seed of the noise."""
    ct_angles: int | None = None
    """Also store the image's parallel-beam sinogram at this many angles over [0, 180)
    degrees: `distlg train` on the store then learns the image from the sinogram (CT
    reconstruction); the image stays as the reference it is scored against. With
    --sinogram: the measured sinogram's angle count (default: its columns)."""
    sinogram: bool = False
    """The source is a measured parallel-beam sinogram, a 2-D array [detectors, angles] (.npy,
    TIFF, image) with angles evenly over [0, 180): store it to learn the n x n image it
    projects (n = detectors / sqrt 2), with that image's filtered back-projection as a
    starting view (no reference: training scores the projections)."""
    overwrite: bool = False
    """Replace a complete store that holds a different signal (an incomplete one is always
    resumed or restarted)."""
    progress: bool = True
    """Show a progress bar (on a terminal)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("factors", "partition_size", "chunks", "shape"):
            values = getattr(self, name)
            if values is not None and min(int(v) for v in values) < 1:
                raise IngestError(f"--{name.replace('_', '-')} needs positive values, got "
                                  f"{list(values)}")
        self.shard = _shard_option(self.shard)
        if not 0 <= int(self.noise_seed) < 2**64:
            raise IngestError(f"--noise-seed {self.noise_seed}: give a seed in [0, 2^64)")
        degrade.check(self.downsample, self.noise, self.ct_angles, self.sinogram)


def _shard_option(value) -> str | tuple[int, ...] | None:
    """``--shard`` as given: None, 'auto', or positive integers (one, or one per axis)."""
    if value is None:
        return None
    values = [value] if isinstance(value, (str, int)) else list(value)
    if [str(v) for v in values] == ["auto"]:
        return "auto"
    try:
        shape = tuple(int(v) for v in values)
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise IngestError(f"--shard needs `auto` or positive sizes per axis, got "
                          f"{' '.join(map(str, values))}")
    return shape


@dataclass
class IngestResult:
    path: str | Path
    """The store written (a URL as given)."""
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
    if not remote.is_url(path):  # s3:// is written, http(s):// refused as read-only below
        refuse_url(path, "STORE")
    path = store.location(path)
    if remote.is_url(path):
        if options.ct_angles or options.sinogram:
            raise IngestError(f"{path}: a CT store (--ct-angles, --sinogram) is written to a "
                              "local path only")
        remote.check_writable(path)
        return _ingest(source, path, options, t0)
    if path.is_symlink():  # a link to the store: the store is replaced where it lies
        path = path.resolve()
    check_apart(path, {"source": source}, "STORE")
    with exclusive(path, "STORE"):  # one ingest into a store at a time
        return _ingest(source, path, options, t0)


def _ingest(source: str | Path, path: str | Path, options: IngestOptions, t0: float) -> IngestResult:
    src = degrade.apply(open_source(source, options), options.downsample, options.noise,
                        options.noise_seed, options.ct_angles, options.sinogram)
    options.spacing(src.kind)  # a --voxel-size of the wrong length: refused before the store is touched
    chunking = plan_chunks(src, options)
    array, status, build = _prepare(path, src, chunking, options)
    if status != "up to date":
        try:
            _copy(array, src, options, build)
        except BaseException as exc:
            if build != path:  # the complete store it was to replace stays as it was
                shutil.rmtree(build, ignore_errors=True)
            elif isinstance(exc, IngestError):  # the source's content: a rerun stops there too
                _discard(path)
            raise
    if build != path:
        _swap(build, path)
    return IngestResult(path, status, tuple(array.shape), np.dtype(array.dtype).name,
                        tuple(array.chunks), chunking, math.prod(array.shape) * array.dtype.itemsize,
                        store.stored_bytes(path), time.perf_counter() - t0)


def _discard(path: str | Path) -> None:
    """Remove the incomplete store at ``path``, as far as it can be (the error that stopped the
    ingest is the one reported)."""
    try:
        store.remove(path)
    except Exception:
        pass


def plan_chunks(src: Source, options: IngestOptions) -> dict:
    """The partition grid ingest assumes and the chunk shape aligned with it."""
    dims = src.shape[:-1]
    factors, size = defaults.grid_factors(
        src.kind, dims, _per_axis(options.factors, len(dims), "--factors"),
        _per_axis(options.partition_size, len(dims), "--partition-size"))
    grid = PartitionGrid(dims, factors)
    value_bytes = src.shape[-1] * src.dtype.itemsize
    chunks = _per_axis(options.chunks, len(dims), "--chunks") or store.chunk_shape(
        dims, grid.part_shape, value_bytes)
    chunks = tuple(min(c, n) for c, n in zip(chunks, dims))  # no chunk beyond the signal
    if math.prod(chunks) * value_bytes > CHUNK_LIMIT:
        raise IngestError(f"--chunks {' '.join(map(str, chunks))}: a chunk of "
                          f"{math.prod(chunks) * value_bytes / 2**30:.1f} GiB is more than the "
                          f"{CHUNK_LIMIT >> 20} MiB a chunk may hold (each is read and written "
                          "whole); give smaller chunks")
    plan = {"partition_size": list(size), "factors": list(grid.factors),
            "part_shape": list(grid.part_shape), "chunks": list(chunks)}
    if options.shard:
        plan["shards"] = list(plan_shards(dims, grid.part_shape, chunks, value_bytes, options.shard))
    return plan


def plan_shards(dims: Sequence[int], part_shape: Sequence[int], chunks: Sequence[int],
                value_bytes: int, shard: str | Sequence[int]) -> tuple[int, ...]:
    """The shard shape of ``--shard`` (``auto``: ``store.shard_shape``), checked: whole
    partitions and chunks on every axis, and a shard-row that fits ``store.SHARD_ROW_LIMIT``."""
    unit = store.shard_unit(part_shape, chunks)
    if shard == "auto":
        shards = store.shard_shape(dims, part_shape, chunks, value_bytes)
    else:
        shards = _per_axis(shard, len(dims), "--shard")
        bad = [a for a, (s, u) in enumerate(zip(shards, unit)) if s % u]
        if bad:
            raise IngestError(f"--shard {' '.join(map(str, shards))}: each size must be a multiple "
                              f"of {' '.join(map(str, unit))} (whole partitions of "
                              f"{'x'.join(map(str, part_shape))} and chunks of "
                              f"{'x'.join(map(str, chunks))}); axis {bad[0]} is not")
    row = store.shard_row_bytes(dims, shards, value_bytes)
    if row > store.SHARD_ROW_LIMIT:
        fix = (f"use shards of fewer rows (a multiple of {unit[0]})" if shards[0] > unit[0] else
               "use partitions and chunks of fewer rows along the first axis")
        raise IngestError(f"--shard: a shard-row ({shards[0]} rows of the first axis) is "
                          f"{row / 2**30:.1f} GiB, more than the {store.SHARD_ROW_LIMIT >> 30} GiB "
                          f"ingest holds in memory; {fix}")
    return shards


def _per_axis(values: Sequence[int] | None, ndim: int, name: str) -> tuple[int, ...] | None:
    if not values:
        return None
    values = [int(v) for v in values]
    values = values * ndim if len(values) == 1 else values
    if len(values) != ndim or min(values) < 1:
        raise IngestError(f"{name} needs 1 or {ndim} positive values for this {ndim}-axis signal, "
                          f"got {values}")
    return tuple(values)


def _prepare(path: str | Path, src: Source, chunking: dict, options: IngestOptions):
    """Open the store to resume, or (re)create it. Returns (array, status, where it is built):
    a complete local store that ``--overwrite`` replaces stays until the new one is complete,
    which is built beside it; a remote one is replaced in place."""
    fingerprint = json.loads(json.dumps({**src.identity, "kind": src.kind, **chunking}))
    array = store.open_array(path, mode="r+")
    if array is not None:
        desc = store.info(array)
        same = desc["ingest"].get("fingerprint") == fingerprint
        if desc.get("complete"):
            if same and not options.overwrite:
                return array, "up to date", path
            if not options.overwrite:
                raise IngestError(f"{path} already holds a complete signal (from "
                                  f"{desc['meta'].get('source')}); pass --overwrite to replace it")
        elif same and not options.overwrite:
            return array, "resumed", path
    build = path
    url = remote.is_url(path)
    if array is not None and desc.get("complete"):
        if not url:  # a remote one is replaced in place: create() deletes its objects
            build = path.with_name(f".{path.name}.replacing")  # swapped in when complete
            if build.exists():
                shutil.rmtree(build)
    elif store.exists(path):
        store.remove(path)
    info = {"kind": src.kind, "axes": list(AXES[src.kind]), "complete": False,
            "meta": {**src.meta, **options.spacing(src.kind, options.downsample or 1),
                     "source": Path(src.path).name, "source_bytes": src.nbytes},
            "chunking": chunking,
            "ingest": {"fingerprint": fingerprint, "done": 0, "low": None, "high": None}}
    if not url:
        path.parent.mkdir(parents=True, exist_ok=True)
    array = store.create(build, src.shape, src.dtype, chunking["chunks"], AXES[src.kind], info,
                         chunking.get("shards"))
    return array, "written", build


def _swap(build: Path, path: Path) -> None:
    """Put the complete store ``build`` in the place of the store at ``path``."""
    old = path.with_name(f".{path.name}.replaced")
    if old.exists():
        shutil.rmtree(old)
    os.rename(path, old)
    os.rename(build, path)
    shutil.rmtree(old)


def _copy(array, src: Source, options: IngestOptions, path: Path) -> None:
    """Stream the source into ``array`` from where it stopped, a chunk-row at a time (a whole
    shard-row in a sharded store, so every shard is written once, whole); write the marker
    last."""
    from tqdm.auto import tqdm

    progress = store.info(array)["ingest"]
    done, low, high = progress["done"], progress["low"], progress["high"]
    unit = {"video": "frame", "volume": "slice", "image": "row", "audio": "sample"}[src.kind]
    bar = tqdm(total=src.shape[0], initial=done, unit=unit, unit_scale=src.kind == "audio",
               desc=f"ingest {Path(src.path).name}", disable=None if options.progress else True)
    with bar:
        for slab in src.slabs(done, (array.shards or array.chunks)[0]):
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
    value_range = src.value_range or default_range(np.asarray([low, high], dtype=src.dtype), src.kind)
    if src.attach is not None:
        src.attach(path)
    store.update(array, value_range=list(value_range), complete=True)


def _extend_range(low, high, slab: np.ndarray, path: str, row: int) -> tuple[float, float]:
    """Running minimum and maximum; floating-point sources must be finite."""
    lo, hi = float(slab.min()), float(slab.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise IngestError(f"{path}: non-finite values (NaN or infinity) in rows {row}-{row + len(slab) - 1}")
    return (lo if low is None else min(low, lo)), (hi if high is None else max(high, hi))


# -- sources ---------------------------------------------------------------------------------------
READERS = {**dict.fromkeys(VIDEO_SUFFIXES, open_video), **dict.fromkeys(IMAGE_SUFFIXES, open_image),
           **dict.fromkeys(TIFF_SUFFIXES, open_tiff), **dict.fromkeys(RAW_SUFFIXES, open_raw),
           ".npy": open_npy, ".wav": open_wav}
"""The reader of each file suffix (``distlg.data.sources``); a folder is frames."""


def open_source(spec: str | Path, options: SourceOptions) -> Source:
    """The source that ``spec`` names (see the module docstring), with its shape and dtype (a
    bool one as uint8 0 and 1, ``mask_as_bytes``)."""
    spec = str(spec)
    path = Path(spec)
    if spec.startswith(PREFIX):
        src = open_builtin(spec, options)
    elif not path.exists():
        raise IngestError(f"{path}: no such file or folder")
    elif path.is_dir():
        src = open_frames(path, options)
    elif path.suffix.lower() in READERS:
        src = READERS[path.suffix.lower()](path, options)
    else:
        raise IngestError(f"{path}: unsupported source type {path.suffix.lower() or '(no suffix)'}; "
                          f"use a video ({', '.join(VIDEO_SUFFIXES)}), a folder of frames, .npy, raw "
                          f"({', '.join(RAW_SUFFIXES)}), TIFF, PNG/JPEG or .wav")
    return mask_as_bytes(src)
