"""Quality of a reconstruction: PSNR over every value, SSIM where it means something."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .data.signal import Signal
from .geometry import PartitionGrid
from .nn.model import INR
from .rendering.region import RenderError, Slab, box_text
from .rendering.render import RegionRender, render_partitions

SSIM_MAX_BYTES = 512 << 20
"""Memory SSIM may take: the reconstruction and the signal are assembled (8 bytes a value), and
scikit-image's n-dimensional SSIM of a volume holds about ten float64 copies (80 more); larger
signals are scored by PSNR alone."""


def ssim_bytes(values: int, kind: str) -> int:
    """Memory the SSIM of a ``kind`` signal of ``values`` values takes (images and video are
    scored a frame at a time)."""
    return values * (88 if kind == "volume" else 8)


def psnr(mse: float, peak: float) -> float:
    """10 log10(peak^2 / mse); peak 2 scores [-1, 1] values as [0, 1] images do."""
    return float("inf") if mse <= 0 else 10.0 * math.log10(peak * peak / mse)


def ssim(truth: np.ndarray, pred: np.ndarray, kind: str) -> float | None:
    """SSIM of values in [-1, 1] (scored on [0, 1]); per frame for video, nD for volumes.
    None for audio, where SSIM is not used."""
    from skimage.metrics import structural_similarity

    if kind == "audio":
        return None
    a, b = (truth + 1) / 2, (pred + 1) / 2
    kw = dict(data_range=1.0, channel_axis=-1)
    if min(a.shape[:-1]) < 7:
        return None
    if kind == "video":
        return float(np.mean([structural_similarity(x, y, **kw) for x, y in zip(a, b)]))
    return float(structural_similarity(a, b, **kw))


@dataclass
class Evaluation:
    mse: float
    psnr: float
    ssim: float | None = None
    reconstruction: np.ndarray | None = None
    """Normalised [-1, 1] reconstruction (only when asked for and small enough)."""


def evaluate(model: INR, grid: PartitionGrid, signal: Signal, pids: Sequence[int] | None = None,
             reduce: Callable[[list[float]], list[float]] | None = None,
             full: bool = False) -> Evaluation:
    """Score the model's partitions against the signal, each position by its own partition.

    ``reduce`` sums [sse, count] over workers (identity by default). With ``full`` (single
    process, small signals) the reconstruction is assembled and SSIM computed too.
    """
    values = math.prod(signal.shape) * signal.channels
    keep = full and ssim_bytes(values, signal.kind) <= SSIM_MAX_BYTES
    recon = np.zeros(signal.shape + (signal.channels,), np.float32) if keep else None
    truth_all = np.zeros_like(recon) if keep else None
    sse, count = 0.0, 0
    for _, box, values in render_partitions(model, grid, pids):
        truth = signal.normalise(signal.read(box))
        pred = np.clip(values, -1.0, 1.0)
        sse += float(np.square(pred - truth, dtype=np.float64).sum())
        count += pred.size
        if keep:
            where = tuple(slice(a, b) for a, b in box)
            recon[where], truth_all[where] = pred, truth
    if reduce is not None:
        sse, count = reduce([sse, float(count)])
    mse = sse / max(count, 1)
    out = Evaluation(mse, psnr(mse, signal.psnr_peak))
    if keep:
        out.ssim = ssim(truth_all, recon, signal.kind)
        out.reconstruction = recon
    return out


class Comparison:
    """PSNR of a streamed render against the signal the model encodes, slab by slab: the
    trainer's score (clipped values, the signal's PSNR peak) over the region. Scale 1 only."""

    def __init__(self, signal: Signal, plan: RegionRender):
        if any(s != 1 for s in plan.render_grid.scale):
            raise RenderError("comparing with the signal needs scale 1 (the signal's own grid)")
        region = plan.render_grid.region
        if any(b > d for (_, b), d in zip(region, signal.shape)) or len(region) != len(signal.shape):
            raise RenderError(f"the signal (shape {signal.shape}) does not hold the region "
                              f"{box_text(region)}")
        self.signal, self.region = signal, region
        self.sse, self.count = 0.0, 0

    def add(self, slab: Slab) -> None:
        a0 = self.region[0][0] + slab.start
        box = ((a0, a0 + len(slab.values)),) + self.region[1:]
        truth = self.signal.normalise(self.signal.read(box))
        self.sse += float(np.square(np.clip(slab.values, -1.0, 1.0) - truth, dtype=np.float64).sum())
        self.count += slab.values.size

    @property
    def psnr(self) -> float:
        return psnr(self.sse / max(self.count, 1), self.signal.psnr_peak)
