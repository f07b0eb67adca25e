"""What a render may be asked, checked before anything is written: ``--rate`` and ``--level``
only where the output uses them, and with values it can use, and an output that fits the disk.

- ``--rate``: the frame rate of an .mp4 (at most ``MAX_FPS``) or the sample rate of a .wav
  (whole hertz, at most ``MAX_SAMPLE_RATE``, what the WAV header holds); finite and positive
  after ``--scale`` multiplies it along time.
- ``--level``: the iso-value of a .ply/.obj surface, finite and inside the signal's value
  range (rendered values stay inside it); a surface that comes out empty all the same is
  refused by the mesh writer.
- Disk space: an uncompressed output (.npy, .wav, PNG) needs its bytes free where it is
  written; a compressed one (.zarr, .mp4, a mesh) is refused when even at ``MAX_RATIO``
  times compression it would not fit, which catches a mistyped --scale (``--scale 1000000``:
  petabytes) before hours of work.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

from ..data.signal import SignalInfo
from .region import RenderError

RATE_SUFFIXES = (".mp4", ".wav")
MESH_SUFFIXES = (".ply", ".obj")
MAX_FPS = 1000.0
"""Frames per second an .mp4 may be written at (H.264 streams beyond this are not played)."""
MAX_SAMPLE_RATE = 2**32 - 1
"""The largest sample rate a WAV header holds (an unsigned 32-bit field)."""
COMPRESSED = (".zarr", ".mp4", ".ply", ".obj")
MAX_RATIO = 1000
"""Compression no output reaches on a real signal: the bound behind the disk-space check."""


def check_options(path: Path, info: SignalInfo, time_scale: float, rate: float | None,
                  level: float | None) -> None:
    """Refuse ``rate`` and ``level`` where the output does not use them or cannot use them."""
    suffix = path.suffix.lower()
    if rate is not None:
        if suffix not in RATE_SUFFIXES:
            raise RenderError(f"--rate is the frame rate of an .mp4 or the sample rate of a .wav; "
                              f"{path.name} has none: leave --rate out")
        check_rate(rate * time_scale, suffix, f"--rate {rate:g}")
    if level is not None:
        if suffix not in MESH_SUFFIXES:
            raise RenderError(f"--level is the iso-value of a .ply or .obj surface; {path.name} "
                              "is not a mesh: leave --level out")
        check_level(level, info)


def check_rate(rate: float, suffix: str, what: str) -> None:
    """One line unless ``rate`` (after --scale) is one the output format can hold."""
    if suffix == ".mp4" and not (math.isfinite(rate) and 0 < rate <= MAX_FPS):
        raise RenderError(f"{what}: an .mp4 needs a frame rate above 0 and at most {MAX_FPS:g} fps "
                          f"(after --scale: {rate:g})")
    if suffix == ".wav" and not (math.isfinite(rate) and 1 <= round(rate) <= MAX_SAMPLE_RATE):
        raise RenderError(f"{what}: a .wav needs a sample rate from 1 to {MAX_SAMPLE_RATE:,} Hz "
                          f"(after --scale: {rate:g})")


def check_level(level: float, info: SignalInfo) -> None:
    """Refuse a mesh level that is not a number, or that lies outside the signal's value range
    (rendered values stay inside it, so the surface would be empty)."""
    lo, hi = info.value_range
    if not math.isfinite(level):
        raise RenderError(f"the mesh level must be a finite number, got {level}")
    if not lo <= level <= hi:
        raise RenderError(f"the mesh level {level:g} lies outside the signal's value range "
                          f"({lo:g} to {hi:g}), so its surface would be empty")


def check_space(path: Path, shape: tuple[int, ...], info: SignalInfo) -> None:
    """Refuse an output of ``shape`` values that the disk under ``path`` cannot hold."""
    raw = math.prod(shape) * info.dtype.itemsize
    need = raw / MAX_RATIO if path.suffix.lower() in COMPRESSED else raw
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = shutil.disk_usage(folder).free
    if need > free:
        how = f" even at {MAX_RATIO}x compression" if need < raw else ""
        raise RenderError(f"the render ({' x '.join(map(str, shape))} values, {raw / 1e9:,.1f} GB) "
                          f"would not fit{how} in the {free / 1e9:,.1f} GB free under {folder}; "
                          "render a smaller region or scale")
