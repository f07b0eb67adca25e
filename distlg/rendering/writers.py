"""Writers for streamed renders: each takes a render's slabs in order and writes as it goes.

The output format follows the file name's suffix:

- ``.zarr`` any signal: a distlg signal store (Zarr) in the signal's dtype and units;
- ``.npy``  any signal: the same as a NumPy file (header first, then the slabs, in C order);
- ``.mp4``  video: H.264 frames, 8-bit (odd frame sizes are padded by one edge row/column);
- ``.png``  an image (assembled in memory, 8-bit, or 16-bit for 16-bit signals), or one file
  per frame/slice of a video or volume, ``NAME-000000.png`` upwards;
- ``.wav``  audio: 16-bit PCM (8-bit unsigned for an 8-bit signal);
- ``.ply`` / ``.obj`` a volume: the surface at ``level`` (signal units; default the middle of
  the value range) by marching cubes on the first channel, slab by slab (vertices on the planes
  between slabs are repeated, a triangle soup there).

Nothing is overwritten: no file the render would write may exist yet (for PNG frames, every
``NAME-NNNNNN.png``). Everything is written into a hidden folder beside the output and moved
into place only when the render has finished (``Output.close``); a render that fails or is
interrupted removes it (``Output.abort``), so nothing appears under the requested name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import wave
from pathlib import Path
from typing import Protocol

import numpy as np

from ..data import store
from ..data.signal import SignalInfo, audio_centre
from ..geometry import PartitionGrid
from ..modeldir.format import ModelDir
from ..staging import staging_folder
from .limits import check_options, check_rate, check_space
from .region import RenderError, RenderGrid, Slab

FORMATS = (".zarr", ".npy", ".mp4", ".png", ".wav", ".ply", ".obj")
DEFAULT_FPS = 25.0
DEFAULT_SAMPLE_RATE = 44100.0


class RenderPlan(Protocol):
    """What a writer needs of a planned render (``render.RegionRender`` is one)."""

    shape: tuple[int, ...]
    """Samples per axis, then channels."""
    info: SignalInfo
    render_grid: RenderGrid
    grid: PartitionGrid
    md: ModelDir


class Writer(Protocol):
    def write(self, slab: Slab) -> None: ...
    def close(self) -> None: ...


def to_8bit(values: np.ndarray) -> np.ndarray:
    """[-1, 1] values as 0..255 (what denormalising an 8-bit image or video gives)."""
    return np.rint((np.clip(values, -1.0, 1.0) + 1.0) * 127.5).astype(np.uint8)


def output_names(path: Path, plan: RenderPlan) -> list[Path]:
    """Every path a render of ``plan`` to ``path`` writes: ``path`` itself, or for PNG of a
    video or volume one ``NAME-NNNNNN.png`` per frame or slice."""
    if path.suffix.lower() == ".png" and plan.info.kind != "image":
        return [path.with_name(f"{path.stem}-{k:06d}.png") for k in range(plan.shape[0])]
    return [path]


def held_per_value(path: str | Path, plan: RenderPlan) -> float:
    """Bytes per output value a writer for ``path`` keeps until it closes: a PNG image is
    encoded whole (1 byte per value, 2 for 16-bit); every other output streams."""
    if Path(path).suffix.lower() == ".png" and plan.info.kind == "image":
        return 2.0 if plan.info.dtype == np.uint16 else 1.0
    return 0.0


def open_writer(path: str | Path, plan: RenderPlan, rate: float | None = None,
                level: float | None = None) -> "Output":
    """The writer for ``path`` (format from its suffix) of ``plan``'s render.

    ``rate`` is the frame rate (mp4) or sample rate (wav) of the signal at scale 1 (default: the
    signal's own, else 25 fps / 44.1 kHz), multiplied by a scale along time; ``level`` a mesh's
    iso-value in signal units (both checked by ``limits``). The writer writes into a hidden
    folder beside ``path``: ``close`` moves the output into place, ``abort`` removes it."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise RenderError(f"cannot write {path.name}: the output must end in one of {', '.join(FORMATS)}")
    kind = plan.info.kind
    needs = {".mp4": ("video",), ".wav": ("audio",), ".ply": ("volume",), ".obj": ("volume",),
             ".png": ("image", "video", "volume")}.get(suffix)
    if needs and kind not in needs:
        raise RenderError(f"{suffix} output is for {' or '.join(needs)} signals; this model "
                          f"encodes {kind}; write .zarr or .npy instead")
    check_options(path, plan.info, plan.render_grid.scale[0], rate, level)
    check_space(path, plan.shape, plan.info)
    names = output_names(path, plan)
    taken = [n for n in names if os.path.lexists(n)]
    if taken:
        raise RenderError(f"{taken[0]} already exists; remove it or choose another name")
    staging = staging_folder(path, RenderError)
    try:
        writer = _format_writer(staging / path.name, plan, rate, level)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Output(writer, staging, names)


def _format_writer(path: Path, plan: RenderPlan, rate: float | None,
                   level: float | None) -> Writer:
    info, suffix = plan.info, path.suffix.lower()
    if suffix == ".zarr":
        return ZarrWriter(path, plan)
    if suffix == ".npy":
        return NpyWriter(path, plan.shape, info)
    if suffix == ".mp4":
        fps = float(rate or info.fps or DEFAULT_FPS) * plan.render_grid.scale[0]
        check_rate(fps, suffix, "the frame rate")
        return Mp4Writer(path, fps, info.channels)
    if suffix == ".png":
        return PngWriter(path, plan.shape, info)
    if suffix == ".wav":
        sr = float(rate or info.sample_rate or DEFAULT_SAMPLE_RATE) * plan.render_grid.scale[0]
        check_rate(sr, suffix, "the sample rate")
        return WavWriter(path, sr, info)
    iso = float(info.normalise(np.float32(np.mean(info.value_range) if level is None else level)))
    return MeshWriter(path, plan.render_grid, iso, info)


class Output:
    """A format writer working in a hidden staging folder, and the names it will take.

    ``close`` finishes the writer and moves each output (file or Zarr folder) into place;
    ``abort`` removes the staging folder, leaving nothing under the requested names."""

    def __init__(self, writer: Writer, staging: Path, names: list[Path]):
        self.writer, self.staging, self.names = writer, staging, names

    def write(self, slab: Slab) -> None:
        self.writer.write(slab)

    def close(self) -> None:
        moved: list[Path] = []
        try:
            self.writer.close()
            taken = [n for n in self.names if os.path.lexists(n)]
            if taken:
                raise RenderError(f"{taken[0]} appeared during the render; nothing was written")
            for name in self.names:
                os.rename(self.staging / name.name, name)
                moved.append(name)
        except BaseException:
            for name in moved:  # a move that stopped half way is taken back
                os.rename(name, self.staging / name.name)
            self.abort()
            raise
        shutil.rmtree(self.staging, ignore_errors=True)

    def abort(self) -> None:
        """Drop everything written so far (the writer's open files are closed first)."""
        try:
            getattr(self.writer, "discard", self.writer.close)()
        except Exception:
            pass
        shutil.rmtree(self.staging, ignore_errors=True)


class ZarrWriter:
    """A distlg signal store (``distlg.data.store``) of the render, in the signal's dtype and
    units, marked complete when closed: ``open_signal`` reads it like an ingested signal."""

    def __init__(self, path: Path, plan: RenderPlan):
        info, grid = plan.info, plan.render_grid
        part = [min(n, max(1, round(p * s))) for n, p, s in
                zip(grid.shape, plan.grid.part_shape, grid.scale)]
        chunks = store.chunk_shape(grid.shape, part, info.channels * info.dtype.itemsize)
        rated = {k: getattr(info, k) * grid.scale[0] for k in ("fps", "sample_rate") if getattr(info, k)}
        rendered = dataclasses.replace(info, store=None, fingerprint=None, **rated)
        region, scale = [list(r) for r in grid.region], list(grid.scale)
        # the store's identity (no source file): what was rendered, so that rendering the same
        # model, region and scale again writes the same bytes
        what = json.dumps([plan.md.manifest.raw, region, scale], sort_keys=True, default=str)
        attrs = {**store.attributes(rendered),
                 "render": {"region": region, "scale": scale,
                            "id": hashlib.sha256(what.encode()).hexdigest()[:32]}}
        self.info = info
        self.array = store.create(path, plan.shape, info.dtype, chunks, info.axes, attrs)

    def write(self, slab: Slab) -> None:
        self.array[slab.start:slab.start + len(slab.values)] = self.info.denormalise(slab.values)

    def close(self) -> None:
        store.update(self.array, complete=True)

    def discard(self) -> None:
        """Leave the store unmarked (its folder is removed by ``Output.abort``)."""


class NpyWriter:
    """A .npy file in the signal's dtype, written front to back."""

    def __init__(self, path: Path, shape: tuple[int, ...], info: SignalInfo):
        self.info, self.fh = info, open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(info.dtype), "fortran_order": False,
                  "shape": shape}
        np.lib.format.write_array_header_2_0(self.fh, header)

    def write(self, slab: Slab) -> None:
        self.fh.write(np.ascontiguousarray(self.info.denormalise(slab.values)).tobytes())

    def close(self) -> None:
        self.fh.close()


class Mp4Writer:
    """H.264 video through PyAV, one frame at a time."""

    def __init__(self, path: Path, fps: float, channels: int):
        import imageio.v3 as iio

        if channels not in (1, 3):
            raise RenderError(f"mp4 needs 1 or 3 channels, the signal has {channels}")
        self.file = iio.imopen(path, "w", plugin="pyav")
        self.file.init_video_stream("libx264", fps=fps)

    def write(self, slab: Slab) -> None:
        for frame in to_8bit(slab.values):
            if frame.shape[-1] == 1:
                frame = np.repeat(frame, 3, axis=-1)
            pad = ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0))
            self.file.write_frame(np.pad(frame, pad, mode="edge"))

    def close(self) -> None:
        self.file.close()


class PngWriter:
    """One PNG for an image, or one per frame (slice) of a video (volume)."""

    def __init__(self, path: Path, shape: tuple[int, ...], info: SignalInfo):
        if shape[-1] not in (1, 3, 4):
            raise RenderError(f"png needs 1, 3 or 4 channels, the signal has {shape[-1]}")
        self.path, self.info = path, info
        self.image = np.empty(shape, self._dtype()) if info.kind == "image" else None

    def _dtype(self) -> np.dtype:
        return np.dtype(np.uint16) if self.info.dtype == np.uint16 else np.dtype(np.uint8)

    def _pixels(self, values: np.ndarray) -> np.ndarray:
        if self._dtype() == np.uint16:
            return self.info.denormalise(values)
        return to_8bit(values)

    def write(self, slab: Slab) -> None:
        import imageio.v3 as iio

        pixels = self._pixels(slab.values)
        if self.image is not None:
            self.image[slab.start:slab.start + len(pixels)] = pixels
            return
        for k, frame in enumerate(pixels, start=slab.start):
            name = self.path.with_name(f"{self.path.stem}-{k:06d}.png")
            iio.imwrite(name, frame[..., 0] if frame.shape[-1] == 1 else frame)

    def discard(self) -> None:
        """Write nothing more (the frames so far are removed by ``Output.abort``)."""

    def close(self) -> None:
        import imageio.v3 as iio

        if self.image is not None:
            iio.imwrite(self.path, self.image[..., 0] if self.image.shape[-1] == 1 else self.image)


class WavWriter:
    """PCM through the standard library's ``wave``: 8-bit unsigned for a uint8 signal (as 8-bit
    WAV stores it, silence at 128), else 16-bit; other integers are scaled about their silence
    (``audio_centre``) to int16, floats from [-1, 1]."""

    def __init__(self, path: Path, rate: float, info: SignalInfo):
        self.info = info
        self.file = wave.open(str(path), "wb")
        self.file.setnchannels(info.channels)
        self.file.setsampwidth(1 if info.dtype == np.uint8 else 2)
        self.file.setframerate(int(round(rate)))

    def write(self, slab: Slab) -> None:
        self.file.writeframes(pcm(self.info.denormalise(slab.values), self.info.value_range).tobytes())

    def close(self) -> None:
        self.file.close()


def pcm(raw: np.ndarray, value_range: tuple[float, float] = (-1.0, 1.0)) -> np.ndarray:
    """Audio samples ``raw`` as a WAV file stores them: uint8 and int16 as they are, other
    integers scaled to int16 about their silence, floats from [-1, 1] to int16. Floats whose
    ``value_range`` reaches beyond [-1, 1] (a noisy copy of integer audio keeps its source's
    units) are scaled from that range, about its middle (audio's ranges are symmetric about
    silence, ``default_range``)."""
    if raw.dtype in (np.uint8, np.int16):
        return raw.astype(raw.dtype.newbyteorder("<"))
    if raw.dtype.kind in "ui":
        mid = audio_centre(raw.dtype)
        scaled = (raw.astype(np.float64) - mid) * (32767 / (np.iinfo(raw.dtype).max - mid))
    else:
        lo, hi = value_range
        mid, half = ((lo + hi) / 2, (hi - lo) / 2) if lo < -1 or hi > 1 else (0.0, 1.0)
        scaled = np.clip((raw.astype(np.float64) - mid) / half, -1.0, 1.0) * 32767
    return np.clip(np.rint(scaled), -32768, 32767).astype("<i2")


class MeshWriter:
    """The iso-surface of a volume, by marching cubes over consecutive slabs (each with the
    last slice of the one before), as PLY (binary) or OBJ. Vertices are in signal units,
    (x, y, z) order."""

    def __init__(self, path: Path, grid: RenderGrid, level: float, info: SignalInfo):
        if min(grid.shape) < 2:
            raise RenderError("a mesh needs at least 2 samples along every axis of the region")
        self.path, self.grid, self.level, self.info = path, grid, level, info
        self.reached = (math.inf, -math.inf)
        """The lowest and highest rendered value (normalised)."""
        self.ply = path.suffix.lower() == ".ply"
        self.vertices = self.faces = 0
        self.prev: np.ndarray | None = None
        self.parts = [path.with_name(f".{path.name}.{k}.tmp") for k in ("v", "f")]
        self.files = [open(p, "wb") for p in self.parts] if self.ply else [open(path, "w")]

    def write(self, slab: Slab) -> None:
        from skimage.measure import marching_cubes

        block = slab.values[..., 0]
        self.reached = (min(self.reached[0], float(block.min())), max(self.reached[1], float(block.max())))
        offset = slab.start
        if self.prev is not None:
            block, offset = np.concatenate([self.prev, block]), offset - 1
        self.prev = block[-1:]
        if len(block) < 2 or not block.min() <= self.level <= block.max():
            return
        verts, faces, _, _ = marching_cubes(block, self.level)
        verts[:, 0] += offset
        self._emit(self._positions(verts)[:, ::-1], faces[:, ::-1] + self.vertices)

    def _positions(self, index: np.ndarray) -> np.ndarray:
        """Sample indices (fractional) to positions in signal units."""
        s = self.grid
        step = np.asarray([(b - a) / n for (a, b), n in zip(s.region, s.shape)])
        start = np.asarray([a for a, _ in s.region])
        return start - 0.5 + (index + 0.5) * step

    def _emit(self, verts: np.ndarray, faces: np.ndarray) -> None:
        if self.ply:
            self.files[0].write(verts.astype("<f4").tobytes())
            rows = np.empty(len(faces), dtype=[("n", "u1"), ("f", "<i4", 3)])
            rows["n"], rows["f"] = 3, faces
            self.files[1].write(rows.tobytes())
        else:
            fh = self.files[0]
            fh.writelines(f"v {x:.6g} {y:.6g} {z:.6g}\n" for x, y, z in verts)
            fh.writelines(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in faces)
        self.vertices += len(verts)
        self.faces += len(faces)

    def discard(self) -> None:
        """Close the part files without assembling them."""
        for fh in self.files:
            fh.close()

    def close(self) -> None:
        for fh in self.files:
            fh.close()
        if not self.vertices:
            lo, hi = (float(self.info.denormalise(np.float32(v), np.float64)) for v in self.reached)
            level = float(self.info.denormalise(np.float32(self.level), np.float64))
            raise RenderError(f"the surface at level {level:g} is empty: the rendered values span "
                              f"{lo:g} to {hi:g}; give a --level inside that span")
        if not self.ply:
            return
        header = ("ply\nformat binary_little_endian 1.0\ncomment written by distlg\n"
                  f"element vertex {self.vertices}\nproperty float x\nproperty float y\n"
                  f"property float z\nelement face {self.faces}\n"
                  "property list uchar int vertex_indices\nend_header\n")
        with open(self.path, "wb") as out:
            out.write(header.encode())
            for part in self.parts:
                with open(part, "rb") as fh:
                    while chunk := fh.read(1 << 24):
                        out.write(chunk)
                part.unlink()
