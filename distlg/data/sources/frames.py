"""Pictures: a folder of numbered frames (PNG, JPEG, TIFF) as a video or volume, a TIFF stack
(one 2-D page per slice) as a volume or video, and a single image (PNG, JPEG, one-page TIFF)."""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path
from typing import Iterator

import numpy as np

from .base import (
    IngestError,
    Source,
    SourceOptions,
    array_source,
    check_dtype,
    choose_kind,
    first_line,
    identity,
    with_channels,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TIFF_SUFFIXES = (".tif", ".tiff")
FRAME_SUFFIXES = IMAGE_SUFFIXES + TIFF_SUFFIXES


def read_image(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    try:
        return np.asarray(iio.imread(path))
    except Exception as exc:  # Pillow, tifffile and imageio raise many types for a bad file
        raise IngestError(f"{path}: not a readable image ({first_line(exc)})") from None


def open_image(path: Path, options: SourceOptions) -> Source:
    choose_kind(options.kind, ("image",), str(path))
    image = read_image(path)
    return array_source(str(path), path.stat().st_size, "image", image, identity(path), {})


def _natural_key(path: Path) -> list:
    """Order frame names as people number them: frame2 before frame10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def open_frames(path: Path, options: SourceOptions) -> Source:
    """A folder of frames, in natural order; every frame must match the first."""
    kind = choose_kind(options.kind, ("video", "volume"), f"{path} (a folder of frames)")
    files = sorted((p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES
                    and not p.name.startswith(".")), key=_natural_key)
    if not files:
        raise IngestError(f"{path}: no PNG, JPEG or TIFF frames in this folder")
    first = read_image(files[0])
    dtype = check_dtype(first.dtype, files[0])
    shape = (len(files),) + with_channels(first.shape, "image", files[0])

    def slabs(start: int, rows: int) -> Iterator[np.ndarray]:
        for a in range(start, len(files), rows):
            batch = files[a:a + rows]
            out = np.empty((len(batch),) + shape[1:], dtype)
            for i, f in enumerate(batch):
                frame = read_image(f)
                if frame.shape[:2] + (frame.shape[2:] or (1,)) != shape[1:] or frame.dtype != dtype:
                    raise IngestError(f"{f}: frame of shape {frame.shape} and type {frame.dtype} "
                                      f"differs from {files[0].name} ({first.shape}, {first.dtype}); "
                                      "all frames must match")
                out[i] = frame.reshape(shape[1:])
            yield out

    stats = [f.stat() for f in files]
    ident = {"name": path.name, "files": len(files), "size": sum(s.st_size for s in stats),
             "mtime_ns": max(s.st_mtime_ns for s in stats), "first": files[0].name,
             "last": files[-1].name}
    meta = {"fps": options.fps} if options.fps and kind == "video" else {}
    return Source(str(path), ident["size"], kind, shape, dtype, slabs, ident, meta)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """tifffile's logger silenced: what it logs of a damaged file ("invalid page offset") comes
    back as the one-line error raised here instead."""
    log = logging.getLogger("tifffile")
    was, log.disabled = log.disabled, True
    try:
        yield
    finally:
        log.disabled = was


def open_tiff(path: Path, options: SourceOptions) -> Source:
    """A TIFF stack read page by page; a single page is an image."""
    import tifffile

    try:
        with _quiet(), tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            axes, full, dtype, page = series.axes, tuple(series.shape), series.dtype, series.pages[0].shape
    except Exception as exc:  # tifffile raises its own and numpy's errors for a bad file
        raise IngestError(f"{path}: not a readable TIFF file ({first_line(exc)})") from None
    leading = full[:len(full) - len(page)]
    if len(leading) > 1:
        raise IngestError(f"{path}: a TIFF of axes {axes} (shape {full}); only a stack of 2-D pages "
                          "(one slice or frame per page) can be ingested")
    if not leading:
        choose_kind(options.kind, ("image",), f"{path} (a single-page TIFF)")
        return open_image(path, options)
    kind = choose_kind(options.kind, ("volume", "video"), f"{path} (a TIFF stack)")
    dtype = check_dtype(dtype, path)
    shape = with_channels(full, kind, path)

    def slabs(start: int, rows: int) -> Iterator[np.ndarray]:
        with _quiet(), tifffile.TiffFile(path) as tif:
            for a in range(start, shape[0], rows):
                pages = range(a, min(a + rows, shape[0]))
                try:
                    slab = tif.asarray(key=pages, series=0).reshape((len(pages),) + shape[1:])
                except Exception as exc:  # a truncated or damaged file: its pages end early
                    raise IngestError(f"{path}: pages {a}-{pages[-1]} of {shape[0]} cannot be "
                                      f"read ({first_line(exc)}); the file is truncated or "
                                      "damaged") from None
                yield slab

    meta = {"fps": options.fps} if options.fps and kind == "video" else {}
    return Source(str(path), path.stat().st_size, kind, shape, dtype, slabs, identity(path), meta)
