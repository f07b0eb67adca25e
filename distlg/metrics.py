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


SAMPLED_ABOVE = 10**7
"""Signals with more values than this are scored on a fixed subset of partitions by default."""
SAMPLED_VALUES = 1 << 22
"""Values the sampled score evaluates (whole partitions, at least ``SAMPLED_MIN_PARTITIONS``)."""
SAMPLED_MIN_PARTITIONS = 16


@dataclass
class Evaluation:
    mse: float
    psnr: float
    ssim: float | None = None
    reconstruction: np.ndarray | None = None
    """Normalised [-1, 1] reconstruction (only when asked for and small enough)."""
    sampled: tuple[int, int] | None = None
    """(partitions scored, partitions in all) when scored on a subset, else None."""
    psnr_interval: tuple[float, float] | None = None
    """95 % confidence interval of a sampled PSNR."""

    def describe(self) -> str:
        text = f"PSNR {self.psnr:.2f} dB"
        if self.sampled:
            lo, hi = self.psnr_interval
            text += (f" (sampled: {self.sampled[0]} of {self.sampled[1]} partitions, "
                     f"95 % CI {lo:.2f}-{hi:.2f})")
        return text + (f", SSIM {self.ssim:.4f}" if self.ssim is not None else "")


def score_subset(grid: PartitionGrid, channels: int, mode: str = "auto") -> list[int] | None:
    """The partitions a score evaluates: None for all of them (``mode`` full, or auto on a
    signal of at most ``SAMPLED_ABOVE`` values), else a fixed random subset (seed 0, the
    same for any worker count) holding about ``SAMPLED_VALUES`` values."""
    if mode not in ("auto", "full", "sample"):
        raise ValueError(f"unknown evaluation mode {mode!r}")
    total = math.prod(grid.shape) * channels
    if mode == "full" or (mode == "auto" and total <= SAMPLED_ABOVE):
        return None
    per_partition = math.prod(grid.part_shape) * channels
    count = max(SAMPLED_MIN_PARTITIONS, SAMPLED_VALUES // per_partition)
    if count >= grid.num_partitions:
        return None
    rng = np.random.default_rng(0)
    return sorted(int(p) for p in rng.choice(grid.num_partitions, size=count, replace=False))


def evaluate_sampled(model: INR, grid: PartitionGrid, signal: Signal, subset: Sequence[int],
                     reduce: Callable[[list[float]], list[float]] | None = None,
                     offsets: np.ndarray | None = None) -> Evaluation:
    """Estimate the PSNR over the whole signal from the partitions ``subset`` (each worker
    scores those it holds): a cluster sample, the MSE the ratio of summed squared errors to
    summed counts, its 95 % interval from the spread of the per-partition errors."""
    index = {p: i for i, p in enumerate(subset)}
    held = [p for p in model.partition_ids if p in index]
    sums = [0.0] * (2 * len(subset))
    for pid, box, values in render_partitions(model, grid, held, offsets=offsets):
        truth = signal.normalise(signal.read(box))
        i = index[pid]
        sums[2 * i] += float(np.square(np.clip(values, -1.0, 1.0) - truth, dtype=np.float64).sum())
        sums[2 * i + 1] += values.size
    if reduce is not None:
        sums = reduce(sums)
    sse, count = np.asarray(sums[0::2]), np.asarray(sums[1::2])
    k, total = len(subset), grid.num_partitions
    mse = sse.sum() / count.sum()
    # ratio estimator's standard error, with the finite-population correction
    resid = (sse - mse * count) / count.mean()
    se = math.sqrt(max(0.0, 1 - k / total) * resid.var(ddof=1) / k) if k > 1 else 0.0
    peak = signal.psnr_peak
    interval = (psnr(mse + 1.96 * se, peak), psnr(max(mse - 1.96 * se, 1e-30), peak))
    return Evaluation(float(mse), psnr(mse, peak), sampled=(k, total), psnr_interval=interval)


def evaluate(model: INR, grid: PartitionGrid, signal: Signal, pids: Sequence[int] | None = None,
             reduce: Callable[[list[float]], list[float]] | None = None,
             full: bool = False, progress: bool = False,
             offsets: np.ndarray | None = None) -> Evaluation:
    """Score the model's partitions against the signal, each position by its own partition.

    ``reduce`` sums [sse, count] over workers (identity by default). With ``full`` (single
    process, small signals) the reconstruction is assembled and SSIM computed too.
    ``offsets``: score the model's means over them (``render_partitions``).
    """
    values = math.prod(signal.shape) * signal.channels
    keep = full and ssim_bytes(values, signal.kind) <= SSIM_MAX_BYTES
    recon = np.zeros(signal.shape + (signal.channels,), np.float32) if keep else None
    truth_all = np.zeros_like(recon) if keep else None
    sse, count = 0.0, 0
    parts = render_partitions(model, grid, pids, offsets=offsets)
    if progress:
        from tqdm.auto import tqdm
        held = len(pids) if pids is not None else model.num_partitions
        parts = tqdm(parts, total=held, unit="partition", desc="scoring", leave=False)
    for _, box, values in parts:
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
        if not signal.meta.get("measurement", {}).get("reference", True):
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
