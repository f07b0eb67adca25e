"""What the viewer's page shows, rendered on demand from a model directory.

Pictures come in **planes**: an image's (y, x); a video frame's (y, x) at frame t; a volume's
three orthogonal slices (y, x) at z, (z, x) at y and (z, y) at x. A plane is cut into tiles of
``TILE`` x ``TILE`` pixels per zoom level: at level L a pixel is 2^-L samples wide, so a tile
covers ``TILE * 2^-L`` samples of each axis, and it is rendered by ``RegionRender`` at scale
2^L: coarser than the signal's grid when zoomed out, finer when zoomed in (the model is
continuous), and tiles of one level fit edge to edge (``RenderGrid``'s footprints). Where the
model no longer holds a partition (cropped) a tile is transparent: the page shows the hole.

Audio is a waveform: the envelope (lowest and highest value per pixel column) of the samples
on screen, rendered at up to ``WAVE_SAMPLES_PER_COLUMN`` samples per column, or one per column
when zoomed in beyond the grid; and a WAV of the visible samples to play.

With a ground truth (``--compare``), the same tiles and envelopes of the signal (nearest
sample) and the PSNR of the visible part (every sample, or every k-th along each axis for a
large view, k odd so that the samples fall on the grid).
"""

from __future__ import annotations

import io
import math
import shlex
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..data.signal import Signal, audio_centre
from ..errors import DistlgError
from ..geometry import Box
from ..metrics import psnr
from ..modeldir.format import ModelDir
from ..rendering.region import RegionError, RenderGrid, box_text, parse_box
from ..rendering.render import RegionRender
from ..rendering.writers import DEFAULT_SAMPLE_RATE, pcm, to_8bit

TILE = 256
"""Pixels per tile side."""
LEVELS = (-8, 8)
"""Zoom levels: at the finest a sample is 256 pixels wide, at the coarsest 256 samples make one."""
WAVE_SAMPLES_PER_COLUMN = 8
PLAY_SECONDS = 60
"""Longest stretch of audio played at once."""
PSNR_VALUES = 1 << 20
"""Most samples the PSNR of a view evaluates (beyond that every k-th along each axis)."""


class ViewerError(DistlgError):
    """A request the viewer cannot answer (a tile outside the signal, a bad box)."""


@dataclass(frozen=True)
class Plane:
    """A 2-D cut of the signal: ``rows`` and ``cols`` axes, at position ``index`` of ``fixed``
    (None for an image)."""

    name: str
    rows: int
    cols: int
    fixed: int | None


PLANES = {"image": (Plane("yx", 0, 1, None),), "video": (Plane("yx", 1, 2, 0),),
          "volume": (Plane("yx", 1, 2, 0), Plane("zx", 0, 2, 1), Plane("zy", 0, 1, 2)),
          "audio": ()}


def png(rgba: np.ndarray) -> bytes:
    """uint8 [h, w, 4] as PNG (fast compression: tiles are made on demand)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def rgba(values: np.ndarray, present: np.ndarray) -> np.ndarray:
    """[-1, 1] values [h, w, channels] as RGBA: grey for 1 (or 2, 5+) channels, colour for 3 or
    4; alpha 0 where ``present`` [h, w] is False."""
    pixels = to_8bit(values)
    rgb = pixels[..., :3] if pixels.shape[-1] in (3, 4) else np.repeat(pixels[..., :1], 3, axis=-1)
    alpha = np.where(present, 255, 0).astype(np.uint8)[..., None]
    return np.ascontiguousarray(np.concatenate([rgb, alpha], axis=-1))


def _take(data, index: Sequence[np.ndarray]) -> np.ndarray:
    """Values of ``data`` [*dims, channels] at the orthogonal grid of per-axis ``index``."""
    if hasattr(data, "get_orthogonal_selection"):
        return np.asarray(data.get_orthogonal_selection(tuple(index) + (slice(None),)))
    return np.asarray(data[np.ix_(*index, np.arange(data.shape[-1]))])


class ModelViews:
    """The renders behind the page, for one model directory (and one ground truth)."""

    def __init__(self, model: str | Path, truth: Signal | None = None):
        self.path = str(model)
        self.md = ModelDir.open(model)
        self.grid, self.info = self.md.grid, self.md.signal
        self.present = np.zeros(self.grid.num_partitions, bool)
        self.present[self.md.partition_ids] = True
        self.truth = truth
        if truth is not None and (truth.shape != self.grid.shape or truth.channels != self.info.channels):
            raise ViewerError(f"--compare: the signal is {'x'.join(map(str, truth.shape))} with "
                              f"{truth.channels} channel(s), the model "
                              f"{'x'.join(map(str, self.grid.shape))} with {self.info.channels}")
        self.fill = float(np.mean(self.info.value_range))

    def warm(self) -> None:
        """Render one sample (loads the global file and torch's kernels before the first
        request, so the first tile comes as fast as the others)."""
        present = self.md.partition_ids
        if present:
            box = self.grid.valid_box(present[0])
            self.render(tuple((a, a + 1) for a, _ in box), (1.0,) * self.grid.ndim)

    # -- what the page needs to lay itself out -------------------------------------------------
    def describe(self) -> dict:
        info, grid = self.info, self.grid
        return {"model": self.path, "kind": info.kind, "axes": list(info.axes),
                "shape": list(grid.shape), "channels": info.channels, "dtype": info.dtype.name,
                "factors": list(grid.factors), "part_shape": list(grid.part_shape),
                "missing": self.md.missing, "partitions": grid.num_partitions,
                "params": self.md.params(), "fps": info.fps,
                "sample_rate": info.sample_rate, "compare": self.truth is not None,
                "compare_name": (self.truth.info.store or "") if self.truth is not None else "",
                "planes": [p.name for p in PLANES[info.kind]], "tile": TILE, "levels": list(LEVELS)}

    @staticmethod
    def _source(source: str) -> str:
        if source not in ("model", "truth"):
            raise ViewerError(f"unknown source {source!r}: model or truth")
        return source

    def plane(self, name: str) -> Plane:
        for plane in PLANES[self.info.kind]:
            if plane.name == name:
                return plane
        raise ViewerError(f"a {self.info.kind} has no plane {name!r}")

    # -- tiles -------------------------------------------------------------------------------
    def tile_region(self, plane: Plane, level: int, index: int, ty: int, tx: int
                    ) -> tuple[Box, tuple[float, ...]]:
        """The region and scale of tile (ty, tx) of ``plane`` at ``level`` (and ``index``)."""
        if not LEVELS[0] <= level <= LEVELS[1]:
            raise ViewerError(f"zoom level {level} is outside {LEVELS[0]}..{LEVELS[1]}")
        span = TILE * 2.0 ** -level  # samples per tile side: a whole number at every level
        shape, axes = self.grid.shape, self.info.axes
        region = [(0, 1)] * self.grid.ndim
        scale = [1.0] * self.grid.ndim
        for axis, t in ((plane.rows, ty), (plane.cols, tx)):
            a = int(t * span)
            if t < 0 or a >= shape[axis]:
                raise ViewerError(f"tile {t} of axis {axes[axis]} at zoom level {level} lies "
                                  f"outside the signal (0:{shape[axis]})")
            region[axis], scale[axis] = (a, min(shape[axis], int((t + 1) * span))), 2.0 ** level
        if plane.fixed is not None:
            region[plane.fixed] = self._at(plane.fixed, index)
        return tuple(region), tuple(scale)

    def _at(self, axis: int, index: int) -> tuple[int, int]:
        if not 0 <= index < self.grid.shape[axis]:
            raise ViewerError(f"{self.info.axes[axis]}={index} lies outside the signal "
                              f"(0:{self.grid.shape[axis]})")
        return (index, index + 1)

    def _picture(self, values: np.ndarray, plane: Plane) -> np.ndarray:
        """A render [*dims, channels] of one plane as [rows, cols, channels]."""
        return values if plane.fixed is None else np.take(values, 0, axis=plane.fixed)

    def _present(self, grid: RenderGrid, axes: Sequence[int]) -> np.ndarray:
        """Whether the model holds the owner of each sample of ``grid``, over ``axes``."""
        owners = [grid.owners(self.grid, a) for a in range(self.grid.ndim)]
        index = np.ix_(*owners)
        held = self.present[np.ravel_multi_index(index, self.grid.factors)]
        drop = tuple(a for a in range(self.grid.ndim) if a not in axes)
        return held.reshape([n for a, n in enumerate(held.shape) if a not in drop]) if drop else held

    def render(self, region: Box, scale: Sequence[float]) -> tuple[RegionRender, np.ndarray]:
        """The model's values (normalised) over ``region`` at ``scale``; cropped partitions at
        the middle of the value range."""
        plan = RegionRender(self.md, region, scale, fill=self.fill)
        out = np.empty(plan.shape, np.float32)
        for slab in plan:
            out[slab.start:slab.start + len(slab.values)] = slab.values
        return plan, out

    def tile(self, source: str, plane_name: str, level: int, index: int, ty: int, tx: int) -> bytes:
        """PNG of one tile, of the model (``source`` "model") or the ground truth ("truth")."""
        plane, source = self.plane(plane_name), self._source(source)
        region, scale = self.tile_region(plane, level, index, ty, tx)
        grid = RenderGrid(region, scale)
        axes = (plane.rows, plane.cols)
        if source == "truth":
            picture = self._picture(self._truth(grid), plane)
            return png(rgba(picture, np.ones(picture.shape[:-1], bool)))
        _, values = self.render(region, scale)
        return png(rgba(self._picture(values, plane), self._present(grid, axes)))

    def _truth(self, grid: RenderGrid) -> np.ndarray:
        """The ground truth at the nearest sample of each position of ``grid``, normalised."""
        if self.truth is None:
            raise ViewerError("no ground truth: start the viewer with --compare STORE")
        index = [np.clip(np.rint(grid.positions(a)), 0, n - 1).astype(np.int64)
                 for a, n in enumerate(self.grid.shape)]
        return self.truth.normalise(_take(self.truth.data, index))

    # -- audio -------------------------------------------------------------------------------
    def _span(self, start: int, stop: int) -> Box:
        n = self.grid.shape[0]
        if not 0 <= start < stop <= n:
            raise ViewerError(f"samples {start}:{stop} lie outside the signal (0:{n})")
        return ((start, stop),)

    def wave(self, source: str, start: int, stop: int, columns: int) -> dict:
        """Lowest and highest value (first channel, [-1, 1]) of each of ``columns`` columns
        over samples ``start:stop``; None where the model holds no partition."""
        region, source = self._span(start, stop), self._source(source)
        columns = max(1, min(int(columns), 8192))
        per_column = min(WAVE_SAMPLES_PER_COLUMN, max(1, (stop - start) // columns))
        grid = RenderGrid(region, (columns * per_column / (stop - start),))
        n = grid.shape[0] // per_column * per_column
        if source == "truth":
            values, held = self._truth(grid)[:n, 0], np.ones(n, bool)
        else:
            _, values = self.render(region, grid.scale)
            values, held = values[:n, 0], self._present(grid, (0,))[:n]
        values = np.clip(values, -1, 1).reshape(-1, per_column)
        held = held.reshape(-1, per_column).all(1)
        low, high = values.min(1), values.max(1)
        return {"start": start, "stop": stop, "low": [round(float(v), 5) if h else None
                                                      for v, h in zip(low, held)],
                "high": [round(float(v), 5) if h else None for v, h in zip(high, held)]}

    def clip(self, start: int, stop: int) -> bytes:
        """WAV of samples ``start:stop`` (at most ``PLAY_SECONDS``), cropped parts silent."""
        rate = float(self.info.sample_rate or DEFAULT_SAMPLE_RATE)
        stop = min(stop, start + int(PLAY_SECONDS * rate))
        _, values = self.render(self._span(start, stop), (1.0,))
        raw = self.info.denormalise(values)
        if self.info.dtype.kind in "ui":
            grid = RenderGrid(((start, stop),), (1.0,))
            raw[~self._present(grid, (0,))] = audio_centre(self.info.dtype)
        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as out:
            out.setnchannels(self.info.channels)
            out.setsampwidth(1 if self.info.dtype == np.uint8 else 2)
            out.setframerate(int(round(rate)))
            out.writeframes(pcm(raw, self.info.value_range).tobytes())
        return buffer.getvalue()

    # -- boxes: PSNR, crop, go to ------------------------------------------------------------
    def box(self, plane_name: str | None, index: int, text: str) -> Box:
        """The signal box of a 2-D box ``text`` ("r0:r1,c0:c1", in samples) on a plane (at
        ``index``), or of a time span for audio (plane None)."""
        shape, axes = self.grid.shape, self.info.axes
        if plane_name is None:
            return parse_box(text, shape, axes)
        plane = self.plane(plane_name)
        try:
            rows, cols = text.split(",")
        except ValueError:
            raise ViewerError(f"expected ROWS,COLS like 0:64,0:64, got {text!r}") from None
        named = f"{axes[plane.rows]}={rows},{axes[plane.cols]}={cols}"
        box = list(parse_box(named, shape, axes))
        if plane.fixed is not None:
            box[plane.fixed] = self._at(plane.fixed, index)
        return tuple(box)

    def psnr(self, box: Box, axes: Sequence[int]) -> dict:
        """PSNR of the model against the ground truth over ``box``, every k-th sample along
        ``axes`` (k odd, the smallest that keeps it within ``PSNR_VALUES``), where the model
        holds the partitions."""
        if self.truth is None:
            raise ViewerError("no ground truth: start the viewer with --compare STORE")
        area = math.prod(box[a][1] - box[a][0] for a in axes)
        k = 1
        while area / k ** len(axes) > PSNR_VALUES:
            k += 2
        region = tuple((a, a + max(1, (b - a) // k) * k) if i in axes else (a, b)
                       for i, (a, b) in enumerate(box))
        scale = tuple(1.0 / k if i in axes else 1.0 for i in range(len(box)))
        plan, values = self.render(region, scale)
        grid = plan.render_grid
        held = self._present(grid, range(len(box)))
        truth = self._truth(grid)
        err = np.square(np.clip(values, -1, 1) - truth, dtype=np.float64)[held]
        count = int(err.size)
        mse = float(err.mean()) if count else float("nan")
        return {"psnr": psnr(mse, self.info.psnr_peak) if count else None, "values": count,
                "stride": k, "region": box_text(region)}

    def crop_command(self, box: Box, axes: Sequence[int]) -> str:
        """The ``distlg crop`` command that keeps the partitions touching ``box`` along
        ``axes`` (every partition along the others)."""
        keep = ",".join(f"{self.info.axes[a]}={box[a][0]}:{box[a][1]}" for a in axes)
        out = self.path.rstrip("/") + "-crop"
        return f"distlg crop {shlex.quote(self.path)} {shlex.quote(out)} --keep {keep}"

    def goto(self, text: str) -> Box:
        """A BOX the user typed (``distlg render --region`` syntax), checked against the signal."""
        try:
            return parse_box(text, self.grid.shape, self.info.axes)
        except RegionError as exc:
            raise ViewerError(str(exc)) from None
