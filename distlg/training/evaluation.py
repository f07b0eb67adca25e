"""The trainer's score: every value, or a fixed sample of blocks of partitions on large signals.

Each worker scores the partitions it holds (``reduce`` sums over workers). The work goes block
by block of the partition grid (``tiles``): one read of the store for a block (the store's
chunks are aligned with partitions, so that is a few chunk reads, not one read per partition),
then the block's partitions evaluated together, those of one size in one batched prediction,
and their errors taken against the block's values. A sampled score draws whole blocks
(clusters): the PSNR over the whole signal is estimated from them with its 95 % interval.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from ..data.signal import Signal
from ..defaults import SCORINGS
from ..geometry import PartitionGrid, block_shape
from ..metrics import SSIM_MAX_BYTES, Evaluation, psnr, ssim, ssim_bytes
from ..nn import fused
from ..nn.model import INR

SAMPLED_ABOVE = 10**7
"""Signals with more values than this are scored on a fixed subset of blocks by default."""
SAMPLED_VALUES = 1 << 22
"""Values the sampled score evaluates (whole blocks of partitions)."""
SAMPLED_MIN_CLUSTERS = 16
"""Blocks a sampled score draws at least (its interval comes from their spread)."""
TILE_VALUES = 1 << 22
"""Values of the signal a worker reads and scores at once."""
EVAL_SAMPLES = 1 << 18
"""Positions predicted per call."""

Reduce = Callable[[list[float]], list[float]]


def tile_block(grid: PartitionGrid, channels: int, values: int) -> tuple[int, ...]:
    """A block of partitions holding about ``values`` values (at least one partition)."""
    per_partition = math.prod(grid.part_shape) * channels
    return block_shape(grid.factors, max(1, values // per_partition))


def tile_ids(grid: PartitionGrid, block: Sequence[int], pids: np.ndarray) -> np.ndarray:
    """The block (of ``block`` partitions per axis) each partition lies in."""
    index = np.stack(np.unravel_index(pids, grid.factors), -1) // np.asarray(block)
    tiles = tuple(math.ceil(f / b) for f, b in zip(grid.factors, block))
    return np.ravel_multi_index(tuple(index.T), tiles)


def tiles(grid: PartitionGrid, block: Sequence[int], pids: Sequence[int]) -> Iterator[np.ndarray]:
    """``pids`` grouped by block, in block order."""
    pids = np.asarray(pids, dtype=np.int64)
    if not len(pids):
        return
    ids = tile_ids(grid, block, pids)
    order = np.argsort(ids, kind="stable")
    yield from np.split(pids[order], np.flatnonzero(np.diff(ids[order])) + 1)


def score_tile(model: INR, grid: PartitionGrid, signal: Signal, pids: np.ndarray,
               offsets: np.ndarray | None = None, recon: tuple | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
    """Summed squared error and value count of each of ``pids`` (one block of them), each
    position scored by its own partition; one read of the signal for the block. ``offsets``
    [k, ndim]: score the model's mean over the coordinates moved by them (a --downsample
    store's footprints). ``recon``: (reconstruction, truth) arrays to fill."""
    index = np.stack(np.unravel_index(pids, grid.factors), -1)
    part, shape = np.asarray(grid.part_shape), np.asarray(grid.shape)
    starts, stops = index * part, np.minimum((index + 1) * part, shape)
    lo, hi = starts.min(0), stops.max(0)
    truth = signal.normalise(signal.read(tuple(zip(lo.tolist(), hi.tolist()))))
    sse = np.zeros(len(pids))
    count = np.zeros(len(pids))
    sizes = stops - starts
    keys, groups = np.unique(sizes, axis=0, return_inverse=True)
    for g, size in enumerate(keys):
        rows = np.flatnonzero(groups.ravel() == g)
        grid_offsets = np.stack(np.unravel_index(np.arange(math.prod(size)), tuple(size)), -1)
        per_call = max(1, EVAL_SAMPLES // len(grid_offsets))
        for a in range(0, len(rows), per_call):
            r = rows[a:a + per_call]
            positions = starts[r][:, None, :] + grid_offsets[None]           # [g, m, ndim]
            pred = _predict(model, grid, positions, pids[r], offsets)        # [g, m, C]
            local = (positions - lo).reshape(-1, grid.ndim)
            want = truth[tuple(local.T)].reshape(pred.shape)
            np.clip(pred, -1.0, 1.0, out=pred)
            sse[r] = np.square(pred - want, dtype=np.float64).sum(axis=(1, 2))
            count[r] = pred.shape[1] * pred.shape[2]
            if recon is not None:
                where = tuple(positions.reshape(-1, grid.ndim).T)
                recon[0][where] = pred.reshape(-1, pred.shape[-1])
                recon[1][where] = want.reshape(-1, pred.shape[-1])
    return sse, count


def _predict(model: INR, grid: PartitionGrid, positions: np.ndarray, pids: np.ndarray,
             offsets: np.ndarray | None) -> np.ndarray:
    """Model values at integer ``positions`` [g, m, ndim] of partitions ``pids`` [g]: [g, m, C]
    (the mean over ``offsets`` moves of the coordinates, if given)."""
    device = model.coord_scale.device
    coords = torch.from_numpy(grid.normalise(positions)).to(device)
    ids = pids.tolist()
    if offsets is None:
        return _in_pieces(model, coords, ids)
    total = None
    for shift in np.asarray(offsets, dtype=np.float32):
        values = _in_pieces(model, coords + torch.from_numpy(shift).to(device), ids).astype(np.float64)
        total = values if total is None else total + values
    return (total / len(offsets)).astype(np.float32)


def _in_pieces(model: INR, coords: torch.Tensor, ids: list[int]) -> np.ndarray:
    """``fused.predict`` over [g, m, ndim], a part of each partition at a time when one
    partition alone has more than ``EVAL_SAMPLES`` positions."""
    m = coords.shape[1]
    if m <= EVAL_SAMPLES:
        return fused.predict(model, coords, ids).cpu().numpy()
    return np.concatenate([fused.predict(model, coords[:, s:s + EVAL_SAMPLES], ids).cpu().numpy()
                           for s in range(0, m, EVAL_SAMPLES)], axis=1)


def score_subset(grid: PartitionGrid, channels: int, mode: str = "auto") -> list[int] | None:
    """The partitions a score evaluates: None for all of them (``mode`` full, or auto on a
    signal of at most ``SAMPLED_ABOVE`` values), else whole blocks drawn at random (seed 0, the
    same for any worker count) holding about ``SAMPLED_VALUES`` values."""
    if mode not in SCORINGS:
        raise ValueError(f"unknown evaluation mode {mode!r}")
    total = math.prod(grid.shape) * channels
    if mode == "full" or (mode == "auto" and total <= SAMPLED_ABOVE):
        return None
    block = _cluster_block(grid, channels)
    tiles_per_axis = [math.ceil(f / b) for f, b in zip(grid.factors, block)]
    n_tiles = math.prod(tiles_per_axis)
    per_tile = math.prod(block) * math.prod(grid.part_shape) * channels
    count = max(SAMPLED_MIN_CLUSTERS, SAMPLED_VALUES // per_tile)
    if count >= n_tiles:
        return None
    chosen = np.random.default_rng(0).choice(n_tiles, size=count, replace=False)
    out = []
    for t in chosen.tolist():
        start = np.asarray(np.unravel_index(t, tiles_per_axis)) * np.asarray(block)
        stop = np.minimum(start + np.asarray(block), np.asarray(grid.factors))
        mesh = np.meshgrid(*[np.arange(a, b) for a, b in zip(start, stop)], indexing="ij")
        out.append(np.ravel_multi_index(tuple(m.ravel() for m in mesh), grid.factors))
    return np.sort(np.concatenate(out)).tolist()


def _cluster_block(grid: PartitionGrid, channels: int) -> tuple[int, ...]:
    """The blocks a sampled score draws: about 1/32 of ``SAMPLED_VALUES`` each."""
    return tile_block(grid, channels, SAMPLED_VALUES // 32)


def evaluate_sampled(model: INR, grid: PartitionGrid, signal: Signal, subset: Sequence[int],
                     reduce: Reduce | None = None, offsets: np.ndarray | None = None) -> Evaluation:
    """Estimate the PSNR over the whole signal from the blocks of partitions ``subset`` (each
    worker scores the partitions it holds): a cluster sample, the MSE the ratio of summed
    squared errors to summed counts, its 95 % interval from the spread of the blocks' errors."""
    block = _cluster_block(grid, signal.channels)
    subset = np.asarray(subset, dtype=np.int64)
    clusters, cluster_of = np.unique(tile_ids(grid, block, subset), return_inverse=True)
    held = np.intersect1d(np.asarray(model.partition_ids, dtype=np.int64), subset)
    sums = np.zeros((len(clusters), 2))
    for pids in tiles(grid, block, held):
        sse, count = score_tile(model, grid, signal, pids, offsets)
        c = cluster_of.ravel()[np.searchsorted(subset, pids[0])]
        sums[c] += (sse.sum(), count.sum())
    flat = sums.ravel().tolist()
    if reduce is not None:
        flat = reduce(flat)
    sse, count = np.asarray(flat[0::2]), np.asarray(flat[1::2])
    k = len(clusters)
    total = math.prod(math.ceil(f / b) for f, b in zip(grid.factors, block))
    mse = sse.sum() / count.sum()
    # ratio estimator's standard error, with the finite-population correction
    resid = (sse - mse * count) / count.mean()
    se = math.sqrt(max(0.0, 1 - k / total) * resid.var(ddof=1) / k) if k > 1 else 0.0
    peak = signal.psnr_peak
    interval = (psnr(mse + 1.96 * se, peak), psnr(max(mse - 1.96 * se, 1e-30), peak))
    return Evaluation(float(mse), psnr(mse, peak), sampled=(len(subset), grid.num_partitions),
                      psnr_interval=interval)


def evaluate(model: INR, grid: PartitionGrid, signal: Signal, pids: Sequence[int] | None = None,
             reduce: Reduce | None = None, full: bool = False, progress: bool = False,
             offsets: np.ndarray | None = None,
             gather: Callable[[np.ndarray], np.ndarray] | None = None) -> Evaluation:
    """Score the model's partitions (or ``pids``) against the signal, each position by its own
    partition, block by block (``score_tile``).

    ``reduce`` sums [sse, count] over workers (identity by default). With ``full`` (small
    signals) the reconstruction is assembled and SSIM computed too; ``gather`` sums an array
    over workers: each fills its own partitions' positions, so the sum is the whole
    reconstruction (and signal), and every worker can compute the SSIM.
    """
    values = math.prod(signal.shape) * signal.channels
    keep = full and ssim_bytes(values, signal.kind) <= SSIM_MAX_BYTES
    recon = None
    if keep:
        recon = (np.zeros(signal.shape + (signal.channels,), np.float32),
                 np.zeros(signal.shape + (signal.channels,), np.float32))
    pids = model.partition_ids if pids is None else list(pids)
    groups = list(tiles(grid, tile_block(grid, signal.channels, TILE_VALUES), pids))
    if progress:
        from tqdm.auto import tqdm
        groups = tqdm(groups, unit="block", desc="scoring", leave=False,
                      disable=None)  # off where stderr is no terminal (a log file)
    sse = count = 0.0
    for group in groups:
        s, c = score_tile(model, grid, signal, group, offsets, recon)
        sse, count = sse + float(s.sum()), count + float(c.sum())
    if reduce is not None:
        sse, count = reduce([sse, count])
    mse = sse / max(count, 1)
    out = Evaluation(mse, psnr(mse, signal.psnr_peak))
    if keep and gather is not None:
        recon = (gather(recon[0]), gather(recon[1]))
    if keep:
        out.ssim = ssim(recon[1], recon[0], signal.kind)
        out.reconstruction = recon[0]
    return out
