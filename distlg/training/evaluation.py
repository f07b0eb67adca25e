"""The trainer's score: every value, or a fixed sample of whole partitions on large signals,
each worker scoring the partitions it holds (``reduce`` sums over workers)."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from ..data.signal import Signal
from ..defaults import SCORINGS
from ..geometry import PartitionGrid
from ..metrics import SSIM_MAX_BYTES, Evaluation, psnr, ssim, ssim_bytes
from ..nn.model import INR
from ..rendering.render import render_partitions

SAMPLED_ABOVE = 10**7
"""Signals with more values than this are scored on a fixed subset of partitions by default."""
SAMPLED_VALUES = 1 << 22
"""Values the sampled score evaluates (whole partitions, at least ``SAMPLED_MIN_PARTITIONS``)."""
SAMPLED_MIN_PARTITIONS = 16


def score_subset(grid: PartitionGrid, channels: int, mode: str = "auto") -> list[int] | None:
    """The partitions a score evaluates: None for all of them (``mode`` full, or auto on a
    signal of at most ``SAMPLED_ABOVE`` values), else a fixed random subset (seed 0, the
    same for any worker count) holding about ``SAMPLED_VALUES`` values."""
    if mode not in SCORINGS:
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
