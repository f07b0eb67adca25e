"""A streamed render scored against a signal (``distlg render --compare``)."""

from __future__ import annotations

import math

import numpy as np

from ..data.signal import Signal
from ..metrics import SSIM_MAX_BYTES, psnr, ssim, ssim_bytes
from .region import RenderError, Slab, box_text
from .render import RegionRender


class Comparison:
    """PSNR (and SSIM, for an image that fits ``SSIM_MAX_BYTES``) of a streamed render against
    a signal, slab by slab: the trainer's score (clipped values, the signal's PSNR peak) over
    the region. At scale 1 the signal is the one the model encodes (or any holding the region);
    at an integer scale S it is that signal at S times the resolution (super-resolution: a
    model of a store ingested with --downsample S against the original), whose samples the
    render grid meets one for one. A signal that does not fit (axes, channels, extent, a
    non-integer scale) is refused when the comparison is made, before anything is rendered."""

    def __init__(self, signal: Signal, plan: RegionRender):
        grid = plan.render_grid
        region, scale = grid.region, grid.scale
        measurement = signal.info.measurement
        if measurement is not None and not measurement.reference:
            raise RenderError("the signal holds a measured sinogram and only its back-projection "
                              "as an image, no reference to compare with; compare with a store "
                              "of the true image, if there is one")
        if len(region) != len(signal.shape):
            raise RenderError(f"the signal (shape {signal.shape}) does not have the model's "
                              f"{len(region)} axes")
        if signal.channels != plan.info.channels:
            raise RenderError(f"the signal has {signal.channels} channel(s), the model "
                              f"{plan.info.channels}; compare with a signal of the model's channels")
        if any(s != round(s) for s in scale):
            raise RenderError("comparing with a signal needs an integer scale (1: the signal's "
                              "own grid; S: a signal S times finer)")
        box = tuple((a * int(s), a * int(s) + n) for (a, _), s, n in zip(region, scale, grid.shape))
        if any(b > d for (_, b), d in zip(box, signal.shape)):
            raise RenderError(f"the signal (shape {signal.shape}) does not hold the region "
                              f"{box_text(region)} at scale {','.join(f'{s:g}' for s in scale)} "
                              f"({box_text(box)})")
        self.signal, self.region = signal, box
        self.sse, self.count = 0.0, 0
        keep = signal.kind == "image" and ssim_bytes(math.prod(grid.shape) * signal.channels,
                                                      signal.kind) <= SSIM_MAX_BYTES
        self.pairs: list[tuple[np.ndarray, np.ndarray]] | None = [] if keep else None

    def add(self, slab: Slab) -> None:
        a0 = self.region[0][0] + slab.start
        box = ((a0, a0 + len(slab.values)),) + self.region[1:]
        truth = self.signal.normalise(self.signal.read(box))
        pred = np.clip(slab.values, -1.0, 1.0)
        self.sse += float(np.square(pred - truth, dtype=np.float64).sum())
        self.count += slab.values.size
        if self.pairs is not None:
            self.pairs.append((truth, pred))

    @property
    def psnr(self) -> float:
        return psnr(self.sse / max(self.count, 1), self.signal.psnr_peak)

    @property
    def ssim(self) -> float | None:
        """SSIM over the region (images that fit in memory), else None."""
        if not self.pairs:
            return None
        truth, pred = (np.concatenate(side) for side in zip(*self.pairs))
        return ssim(truth, pred, self.signal.kind)
