"""OME-Zarr output of a render: a multiscale image that napari, neuroglancer and the OME tools
open, each pyramid level rendered from the model at its own scale.

``distlg render MODEL --out NAME.ome.zarr [--levels K] [--ome-version 0.5|0.4]`` writes
OME-NGFF 0.5 on Zarr v3 (or 0.4 on Zarr v2): a group whose ``multiscales`` metadata lists the
levels ``0`` .. ``K-1``, each an array in the signal's dtype and units with the axes OME
orders them in, ``[t,] c, [z,] y, x``:

- ``t`` (video frames) has type ``time``, unit ``second`` and a step of 1/fps where the signal
  records its frame rate; ``c`` (channels) type ``channel``; ``z``, ``y``, ``x`` type ``space``,
  with the unit and voxel size given at ingest (``--voxel-size``), else in samples;
- every level's ``coordinateTransformations`` are a ``scale`` (its sample pitch) and a
  ``translation`` (its first sample's centre), so the levels overlay in physical space;
- level k samples the space axes 2^k times more coarsely than level 0 (``--scale``); time and
  channels keep their sampling. It is rendered from the model at that scale, not downsampled
  from level 0: the model is continuous.

Arrays are chunked (a frame, or a block of rows or slices, one channel per chunk) and, on Zarr
v3, sharded when a level is large (one shard per chunk-row, many chunks across). A writer holds
one chunk-row (at most ``ROW_BYTES``) beside the render's own slab, so memory stays bounded
whatever the output's size. Audio has no space axes, which OME-Zarr requires: it is refused.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import zarr

from ..data.signal import SignalInfo
from ..staging import staging_folder
from .region import RenderError, Slab
from .writers import Output, RenderPlan

VERSIONS = ("0.5", "0.4")
SUFFIX = ".ome.zarr"
ROW_BYTES = 64 << 20
"""Most bytes of a chunk-row (chunk depth along the render's first axis, everything else) a
writer buffers before it writes them."""
SHARD_ABOVE = 256 << 20
"""Levels larger than this (uncompressed) are sharded on Zarr v3."""
SHARD_BYTES = 128 << 20
"""Bytes a shard aims at (uncompressed)."""
CHUNK_SIDE = {2: 512, 3: 128}
"""Chunk side along the space axes, by their number (images and frames; volumes)."""
SMALLEST = 256
"""``--levels auto`` halves until the largest space axis is at most this."""
SPACE_UNITS = ("angstrom", "nanometer", "micrometer", "millimeter", "centimeter", "meter")


def is_ome(path: str | Path) -> bool:
    """Whether ``path`` names an OME-Zarr output (``NAME.ome.zarr``)."""
    return str(path).lower().rstrip("/").endswith(SUFFIX)


def space_axes(info: SignalInfo) -> list[int]:
    """Signal axes that OME-Zarr calls space: all but a video's time axis."""
    return [a for a, name in enumerate(info.axes) if name != "t"]


def auto_levels(shape: Sequence[int], info: SignalInfo) -> int:
    """Levels until the largest space axis of the last is at most ``SMALLEST`` samples."""
    largest = max(shape[a] for a in space_axes(info))
    return 1 + max(0, math.ceil(math.log2(largest / SMALLEST))) if largest > SMALLEST else 1


def level_scales(scale: Sequence[float], info: SignalInfo, levels: int) -> list[tuple[float, ...]]:
    """The render scale of each level: ``scale`` halved k times along the space axes."""
    space = set(space_axes(info))
    return [tuple(s / 2**k if a in space else s for a, s in enumerate(scale)) for k in range(levels)]


def check_ome(info: SignalInfo, version: str, levels: int | None) -> None:
    """Refuse what OME-Zarr cannot hold, in one line, before anything is written."""
    if info.kind == "audio":
        raise RenderError("OME-Zarr holds images and volumes (2 or 3 space axes); audio has "
                          "none: write .wav, .zarr or .npy")
    if version not in VERSIONS:
        raise RenderError(f"--ome-version must be one of {', '.join(VERSIONS)}, got {version!r}")
    if levels is not None and not 1 <= levels <= 16:
        raise RenderError(f"--levels must be 1 to 16, got {levels}")


def _ome_axes(info: SignalInfo) -> list[dict]:
    """OME's axes, in its order: t (video), c, then the space axes."""
    out: list[dict] = []
    unit = info.voxel_unit if info.voxel_size else None
    for name in info.axes:
        if name == "t":
            out.append({"name": "t", "type": "time", **({"unit": "second"} if info.fps else {})})
    out.append({"name": "c", "type": "channel"})
    for name in info.axes:
        if name != "t":
            out.append({"name": name, "type": "space", **({"unit": unit} if unit else {})})
    return out


def _to_ome(axis: int, info: SignalInfo) -> int:
    """Position of signal axis ``axis`` among OME's axes (the channel axis inserted)."""
    return axis if info.axes[axis] == "t" else axis + 1


def _unit_sizes(info: SignalInfo) -> list[float]:
    """Physical size of one signal sample per axis: 1/fps seconds for time, the voxel size
    (given at ingest) for space, else 1."""
    voxel = list(info.voxel_size or [])
    space = space_axes(info)
    sizes = []
    for a, name in enumerate(info.axes):
        if name == "t":
            sizes.append(1.0 / info.fps if info.fps else 1.0)
        else:
            sizes.append(float(voxel[space.index(a)]) if len(voxel) == len(space) else 1.0)
    return sizes


def transformations(plan: RenderPlan) -> list[dict]:
    """A level's scale (sample pitch) and translation (centre of its first sample), in OME's
    axis order and physical units."""
    info, grid = plan.info, plan.render_grid
    scale, shift = [1.0] * (len(info.axes) + 1), [0.0] * (len(info.axes) + 1)
    for a, ((lo, hi), n, unit) in enumerate(zip(grid.region, grid.shape, _unit_sizes(info))):
        pitch = (hi - lo) / n
        scale[_to_ome(a, info)] = pitch * unit
        shift[_to_ome(a, info)] = (lo - 0.5 + 0.5 * pitch) * unit
    return [{"type": "scale", "scale": scale}, {"type": "translation", "translation": shift}]


def _omero(info: SignalInfo) -> dict:
    """Display settings: each channel's colour and its value range as the contrast window."""
    lo, hi = info.value_range
    colours = {1: ["FFFFFF"], 3: ["FF0000", "00FF00", "0000FF"],
               4: ["FF0000", "00FF00", "0000FF", "FFFFFF"]}.get(info.channels)
    colours = colours or ["FFFFFF"] * info.channels
    labels = {3: "RGB", 4: "RGBA"}.get(info.channels, "")
    return {"channels": [{"label": labels[k] if labels else f"c{k}", "color": colours[k],
                          "active": True, "coefficient": 1.0, "family": "linear", "inverted": False,
                          "window": {"start": lo, "end": hi, "min": lo, "max": hi}}
                         for k in range(info.channels)],
            "rdefs": {"model": "color" if info.channels > 1 else "greyscale"}}


def multiscales(plans: Sequence[RenderPlan], version: str, name: str) -> dict:
    """The group's attributes: ``multiscales`` (axes, one dataset per level) and ``omero``."""
    info = plans[0].info
    datasets = [{"path": str(k), "coordinateTransformations": transformations(p)}
                for k, p in enumerate(plans)]
    ms = {"name": name, "axes": _ome_axes(info), "datasets": datasets,
          "type": "rendered from a distlg model at each level's scale",
          "metadata": {"region": [list(r) for r in plans[0].render_grid.region],
                       "scales": [list(p.render_grid.scale) for p in plans]}}
    if version == "0.4":
        return {"multiscales": [{"version": "0.4", **ms}], "omero": _omero(info)}
    return {"ome": {"version": "0.5", "multiscales": [ms], "omero": _omero(info)}}


def chunk_layout(shape: Sequence[int], info: SignalInfo, itemsize: int,
                 sharded: bool) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """Chunks and shards (None: unsharded) of a level of ``shape`` (signal order, channels
    last), in OME's axis order. One channel per chunk; a frame per chunk for video; 512-square
    chunks of rows (images) and 128-cubes of slices (volumes), their depth along the first axis
    cut so that a chunk-row stays within ``ROW_BYTES``. Shards are one chunk deep along the
    first axis and time, and span the other axes up to ``SHARD_BYTES``."""
    dims = list(shape[:-1])
    side = CHUNK_SIDE[len(space_axes(info))]
    chunks = [1 if name == "t" else min(d, side) for name, d in zip(info.axes, dims)]
    first_row = math.prod(dims[1:]) * shape[-1] * itemsize
    if info.axes[0] != "t":
        chunks[0] = max(1, min(chunks[0], ROW_BYTES // max(1, first_row)))
    shards = None
    if sharded:
        shards = list(chunks)
        for a in reversed(range(1, len(dims))):
            while shards[a] < dims[a] and math.prod(shards[:a] + [shards[a] * 2] + shards[a + 1:]) \
                    * itemsize <= SHARD_BYTES:
                shards[a] = min(dims[a], shards[a] * 2)
            shards[a] = math.ceil(shards[a] / chunks[a]) * chunks[a]
    order = lambda values: _ome_order(values, info)  # noqa: E731
    return order(chunks), (order(shards) if shards else None)


def _ome_order(values: Sequence[int], info: SignalInfo, channel: int = 1) -> tuple[int, ...]:
    """Per-signal-axis ``values`` in OME's order, with ``channel`` for the channel axis."""
    out = list(values)
    out.insert(1 if info.axes[0] == "t" else 0, channel)
    return tuple(int(v) for v in out)


class OmeZarrWriter:
    """Writes the levels of an OME-Zarr group in turn: the slabs of level 0's render, then
    level 1's, and so on (``write`` takes them in that order), each buffered into whole
    chunk-rows (whole shards) and written in the signal's dtype and units."""

    def __init__(self, path: Path, plans: Sequence[RenderPlan], version: str):
        self.info, self.plans, self.level, self.rows = plans[0].info, list(plans), 0, 0
        fmt = 3 if version == "0.5" else 2
        self.group = zarr.open_group(str(path), mode="w", zarr_format=fmt)
        self.group.attrs.update(multiscales(plans, version, Path(path).name.removesuffix(SUFFIX)))
        self.arrays = [self._array(str(k), p, fmt) for k, p in enumerate(plans)]
        self.buffer: list[np.ndarray] = []

    def _array(self, name: str, plan: RenderPlan, fmt: int) -> zarr.Array:
        dtype = self.info.dtype
        nbytes = math.prod(plan.shape) * dtype.itemsize
        chunks, shards = chunk_layout(plan.shape, self.info, dtype.itemsize,
                                      fmt == 3 and nbytes > SHARD_ABOVE)
        shape = _ome_order(plan.shape[:-1], self.info, plan.shape[-1])
        kw = {"dimension_names": [a["name"] for a in _ome_axes(self.info)]} if fmt == 3 else {
            "chunk_key_encoding": {"name": "v2", "separator": "/"}}
        return self.group.create_array(name, shape=shape, dtype=dtype, chunks=chunks, shards=shards,
                                       compressors=_compressor(dtype, fmt), fill_value=0, **kw)

    @property
    def _depth(self) -> int:
        """Rows of the first axis in one chunk-row of the current level."""
        array = self.arrays[self.level]
        return (array.shards or array.chunks)[0 if self.info.axes[0] == "t" else 1]

    def write(self, slab: Slab) -> None:
        if slab.start != self.rows:
            raise RenderError(f"OME-Zarr level {self.level}: slab at row {slab.start}, expected "
                              f"{self.rows}")
        values = self.info.denormalise(slab.values)
        while len(values):
            total = self.plans[self.level].shape[0]
            depth = min(self._depth, total)
            take = min(len(values), depth - sum(len(b) for b in self.buffer))
            self.buffer.append(values[:take])
            values, self.rows = values[take:], self.rows + take
            held = sum(len(b) for b in self.buffer)
            if held == depth or self.rows == total:
                self._flush(self.rows - held)
            if self.rows == total and self.level + 1 < len(self.plans):
                self.level, self.rows = self.level + 1, 0

    def _flush(self, start: int) -> None:
        block = np.concatenate(self.buffer) if len(self.buffer) > 1 else self.buffer[0]
        self.buffer = []
        block = np.moveaxis(block, -1, 1 if self.info.axes[0] == "t" else 0)
        where = (slice(start, start + block.shape[0]),) if self.info.axes[0] == "t" else (
            slice(None), slice(start, start + block.shape[1]))
        self.arrays[self.level][where] = block

    def close(self) -> None:
        done = self.level == len(self.plans) - 1 and self.rows == self.plans[-1].shape[0]
        if not done:
            raise RenderError(f"OME-Zarr: level {self.level} stopped at row {self.rows}")

    def discard(self) -> None:
        """Write nothing more (the group is removed with the staging folder)."""


def _compressor(dtype: np.dtype, fmt: int):
    """Blosc/zstd with byte shuffle, as a v3 codec or a v2 (numcodecs) compressor."""
    if fmt == 3:
        from zarr.codecs import BloscCodec, BloscShuffle

        return BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle, typesize=dtype.itemsize)
    from numcodecs import Blosc

    return Blosc(cname="zstd", clevel=3, shuffle=Blosc.SHUFFLE)


def open_ome_writer(path: str | Path, plans: Sequence[RenderPlan], version: str = "0.5") -> Output:
    """The OME-Zarr writer for ``path`` of ``plans`` (one per level, finest first), staged:
    ``close`` moves the group into place, ``abort`` removes it."""
    import os
    import shutil

    path = Path(path)
    check_ome(plans[0].info, version, len(plans))
    if os.path.lexists(path):
        raise RenderError(f"{path} already exists; remove it or choose another name")
    staging = staging_folder(path, RenderError)
    try:
        writer = OmeZarrWriter(staging / path.name, plans, version)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Output(writer, staging, [path])
