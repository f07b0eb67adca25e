"""Streaming sampler: a shard too big for memory, gathered chunk by chunk ahead of the trainer.

Which positions a partition samples at a step is known in advance: it is a counter-based hash
of (seed, step, partition) (``sampler.random_positions``). So the sampler works in windows of K
steps. For the next window, a background thread computes every position the window will
sample, groups them by the store chunk that holds them, and then visits the chunks of the
shard's sampling boxes one at a time, in storage order: it reads a chunk once, picks out the
values of the samples that fall in it, and drops it. The trainer meanwhile consumes the current
window's values. Every chunk of the shard is read once per window, only those chunks are read,
and the batches are *exactly* those of the resident sampler: the same samples at every step,
on any number of workers, whatever the budget.

Memory: two windows of sample values (the one in use, the one being gathered), the grouping of
one window's samples (``GROUPING_BYTES`` each), and one decoded chunk. The window is as long as
the budget affords, and no longer than it takes to read at most ``BYTES_PER_SAMPLE`` bytes of
chunks per sample consumed (``plan_window``).

Over a network every chunk request waits a round trip (20-100 ms to an object store), which one
read at a time cannot hide: a window of the bikes clip (200 chunks) took 21 s to gather at
100 ms, against 2 s of training. So for a store named by a URL the reads run ahead
(``read_ahead``): up to ``remote.CONCURRENCY`` chunks in flight, each held decoded until its
turn (within a quarter of the budget), and windows over a network read at most
``REMOTE_BYTES_PER_SAMPLE`` bytes per sample (benchmarks/results/remote.md).

Chunks come from a ``ChunkSource``: the store (``StoreChunks``), or a pack written by
``distlg pack`` (``distlg.data.pack``), which holds the same chunks in the same order as one
tar stream per worker.

webdataset's stages are not used: its shuffle buffer orders samples by what flows through one
worker's pipeline, so a partition's samples would depend on its shard, and its node and worker
splitting deals items round-robin, where partitions belong to compact blocks
(``geometry.shard``) whose owners hold their sub-networks. A step-indexed sampler also gives
every worker exactly the same number of batches, which a stream that runs dry does not. (A
pack only uses webdataset to write and read tar files, in order.)
"""

from __future__ import annotations

import math
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from itertools import islice
from typing import Generator, Protocol, Sequence

import numpy as np
import torch

from ..defaults import MEMORY_BUDGET
from ..geometry import Box, PartitionGrid
from . import remote
from .draws import Batch, SamplerError, check_seed, random_positions, shard_region, to_device
from .signal import Signal
from .store import chunk_shape

BYTES_PER_SAMPLE = 256
"""Bytes of chunks read per training sample consumed, at most, when the budget allows: reading
and decoding them costs about 1 microsecond, against 10-20 to train on one sample on a CPU."""
REMOTE_BYTES_PER_SAMPLE = 64
"""The same bound for chunks that come over a network (a remote store or pack), where reading
costs more: a window four times longer, as the budget allows, reads a quarter as often (on the
bikes clip at 100 ms per request, benchmarks/results/remote.md)."""
CHUNK_READ_BYTES = 256 << 10
"""The fixed cost of one chunk read (~0.6 ms here), in bytes of reading at ~400 MB/s."""
GROUPING_BYTES = 20
"""Memory per sample of a window while it is grouped by chunk: chunk id and offset (int32),
sort order (int64) and sorted ids (int32)."""


def signal_chunks(signal: Signal, grid: PartitionGrid) -> tuple[int, ...]:
    """The store's chunk shape (without channels), or for an in-memory array the shape ingest
    would choose for ``grid``."""
    chunks = getattr(signal.data, "chunks", None)
    if chunks is not None:
        return tuple(int(c) for c in chunks[:-1])
    value_bytes = signal.channels * np.dtype(signal.data.dtype).itemsize
    return chunk_shape(grid.shape, grid.part_shape, value_bytes)


def chunk_box(chunk: int, chunks: Sequence[int], shape: Sequence[int]) -> Box:
    """The box chunk number ``chunk`` covers (chunks of ``chunks``, numbered in storage order,
    of a signal of ``shape``; cut at the signal's edge)."""
    grid = tuple(-(-int(d) // int(c)) for d, c in zip(shape, chunks))
    corner = np.asarray(np.unravel_index(chunk, grid)) * np.asarray(chunks)
    stop = np.minimum(corner + np.asarray(chunks), shape)
    return tuple(zip(corner.tolist(), stop.tolist()))


def shard_chunks(grid: PartitionGrid, pids: Sequence[int], chunks: Sequence[int]) -> list[int]:
    """Every chunk that a sampling box of the shard's partitions touches, in storage order:
    what a window of the streaming sampler may read, in the order it reads them (a window skips
    the chunks none of its samples fall in)."""
    chunk_grid = tuple(-(-int(d) // int(c)) for d, c in zip(grid.shape, chunks))
    size = np.asarray(chunks, dtype=np.int64)
    starts = grid.sample_starts(pids)                                   # [P, ndim], all boxes
    stops = np.minimum(starts + np.asarray(grid.sample_shape), np.asarray(grid.shape))
    first, last = starts // size, (stops - 1) // size                   # chunk index ranges
    span = int((last - first).max(initial=0)) + 1
    ids = []
    for step in np.ndindex(*(span,) * grid.ndim):  # every chunk a box touches, all boxes at once
        index = first + np.asarray(step)
        inside = (index <= last).all(axis=1)
        ids.append(np.ravel_multi_index(tuple(index[inside].T), chunk_grid))
    return np.unique(np.concatenate(ids)).tolist() if ids else []


def plan_window(memory_budget: int, shard_bytes: int, shard_chunks: int, samples_per_step: int,
                value_bytes: int, chunk_bytes: int, held_chunks: int = 2,
                bytes_per_sample: int = BYTES_PER_SAMPLE) -> int:
    """Steps per window: what the budget affords besides ``held_chunks`` decoded chunks, and no
    more than needed to read the shard (its bytes and ``shard_chunks`` chunk reads) for at most
    ``bytes_per_sample`` per sample."""
    per_step = samples_per_step * (2 * value_bytes + GROUPING_BYTES)
    chunks_bytes = held_chunks * chunk_bytes
    affordable = (memory_budget - chunks_bytes) // per_step
    if affordable < 1:
        raise SamplerError(f"streaming this shard needs at least {_size(per_step + chunks_bytes)} "
                           f"({samples_per_step:,} samples per step and {held_chunks} "
                           f"{_size(chunk_bytes)} chunks), over the memory budget of "
                           f"{_size(memory_budget)}; raise the budget or draw fewer samples")
    reading = shard_bytes + shard_chunks * CHUNK_READ_BYTES
    wanted = math.ceil(reading / (samples_per_step * bytes_per_sample))
    return int(max(1, min(affordable, wanted)))


def _size(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if nbytes < 1024:
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.2f} GiB"


class ChunkSource(Protocol):
    """Where the streaming sampler's chunks come from: the store, or a pack (``pack``)."""

    def read(self, chunks: list[tuple[int, Box]]) -> Generator[np.ndarray, None, None]:
        """The values of each (chunk id, box), ids in increasing order: [*box shape, channels]
        in the stored dtype, one at a time."""
        ...


class StoreChunks:
    """Chunks read from the signal (its store), one read each, ``ahead`` of them in flight: the
    next ones are requested while the current one is used (``read_ahead``), and they are
    handed over in order."""

    def __init__(self, signal: Signal, ahead: int = 1):
        self.signal, self.ahead = signal, max(1, int(ahead))

    def read(self, chunks: list[tuple[int, Box]]) -> Generator[np.ndarray, None, None]:
        if self.ahead == 1:
            for _, box in chunks:
                yield self.signal.read(box)
            return
        boxes = iter([box for _, box in chunks])
        pool = ThreadPoolExecutor(max_workers=self.ahead, thread_name_prefix="distlg-read")
        pending = deque(pool.submit(self.signal.read, box) for box in islice(boxes, self.ahead))
        try:
            while pending:
                yield pending.popleft().result()
                for box in islice(boxes, 1):
                    pending.append(pool.submit(self.signal.read, box))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


def is_remote(signal: Signal, source: ChunkSource | None = None) -> bool:
    """Whether the chunks come over a network: from a store or a pack named by a URL."""
    if source is not None:
        return bool(getattr(source, "remote", False))
    return remote.is_url(signal.info.store or "")


def read_ahead(signal: Signal, memory_budget: int, chunk_bytes: int) -> int:
    """Chunks a store read keeps in flight: one for a local store (a read costs ~0.6 ms); for a
    remote one, enough to hide each request's latency behind the others (``remote.CONCURRENCY``,
    as the store allows at once), but no more than a quarter of the memory budget holds."""
    if not is_remote(signal):
        return 1
    return int(min(remote.CONCURRENCY, max(1, memory_budget // (4 * chunk_bytes))))


class StreamingSampler:
    """The resident sampler's batches, gathered from the store a window at a time (see the
    module docstring)."""

    mode = "streaming"

    def __init__(self, signal: Signal, grid: PartitionGrid, pids: Sequence[int], n: int,
                 seed: int = 0, memory_budget: int = MEMORY_BUDGET, device: str | torch.device = "cpu",
                 window: int | None = None, source: ChunkSource | None = None):
        if tuple(grid.shape) != signal.shape:
            raise ValueError(f"grid shape {grid.shape} does not match signal shape {signal.shape}")
        self.signal, self.grid, self.pids = signal, grid, [int(p) for p in pids]
        self.n, self.seed, self.device = int(n), check_seed(seed), torch.device(device)
        self.chunks = np.asarray(signal_chunks(signal, grid))
        value_bytes = signal.channels * np.dtype(signal.data.dtype).itemsize
        chunk_bytes = int(self.chunks.prod()) * value_bytes
        self.ahead = 1 if source else read_ahead(signal, memory_budget, chunk_bytes)
        self.source = source or StoreChunks(signal, self.ahead)
        self.chunk_grid = tuple(int(g) for g in -(-np.asarray(grid.shape) // self.chunks))
        region = shard_region(grid, self.pids)
        self.shard_bytes = math.prod(b - a for a, b in region) * value_bytes
        shard_chunks = math.prod(-(-b // c) - a // c for (a, b), c in zip(region, self.chunks))
        self.window = window or plan_window(memory_budget, self.shard_bytes, shard_chunks,
                                            len(self.pids) * self.n, value_bytes,
                                            chunk_bytes, held_chunks=1 + self.ahead,
                                            bytes_per_sample=REMOTE_BYTES_PER_SAMPLE
                                            if is_remote(signal, source) else BYTES_PER_SAMPLE)
        shape = (self.window, len(self.pids), self.n, signal.channels)
        self._values = [np.empty(shape, signal.data.dtype) for _ in range(2)]
        self._scratch = np.empty(tuple(self.chunks) + (signal.channels,), signal.data.dtype)
        self.stats = {"fill_s": 0.0, "wait_s": 0.0, "gather_s": 0.0, "windows": 0,
                      "chunks_read": 0, "bytes_read": 0}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="distlg-stream")
        self._pending: tuple[int, Future] | None = None
        self._current: int | None = None

    @property
    def resident_bytes(self) -> int:
        """Memory held between windows: the two windows of values and the chunk scratch."""
        return sum(v.nbytes for v in self._values) + self._scratch.nbytes

    def describe(self) -> str:
        per_sample = self.shard_bytes / (self.window * len(self.pids) * self.n)
        ahead = f", {self.ahead} chunks in flight" if self.ahead > 1 else ""
        return (f"streaming: windows of {self.window} steps, each gathered by reading the shard's "
                f"{_size(self.shard_bytes)} once ({per_sample:,.0f} B per sample{ahead}); "
                f"{_size(self.resident_bytes)} held")

    # -- the background gather --------------------------------------------------------------------
    def _group(self, first: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The window's samples grouped by chunk: (chunk ids, group starts, sample order, offsets
        in the chunk), samples numbered as the values array [step, partition, sample]."""
        per_step = len(self.pids) * self.n
        chunk_id = np.empty(self.window * per_step, np.int32)
        offset = np.empty(self.window * per_step, np.int32)
        for i in range(self.window):
            pos = random_positions(self.grid, self.pids, self.n, self.seed, first + i)
            index, within = np.divmod(pos.reshape(-1, self.grid.ndim), self.chunks)
            part = slice(i * per_step, (i + 1) * per_step)
            chunk_id[part] = np.ravel_multi_index(tuple(index.T), self.chunk_grid)
            offset[part] = np.ravel_multi_index(tuple(within.T), tuple(self.chunks))
        order = np.argsort(chunk_id, kind="stable")
        sorted_ids = chunk_id[order]
        del chunk_id
        starts = np.flatnonzero(np.diff(sorted_ids)) + 1
        starts = np.concatenate([[0], starts, [len(sorted_ids)]])
        return sorted_ids[starts[:-1]], starts, order, offset

    def chunk_box(self, chunk: int) -> Box:
        return chunk_box(chunk, self.chunks, self.grid.shape)

    def shard_chunks(self) -> list[int]:
        """The chunks a window may visit, in the order it visits them (``shard_chunks``)."""
        return shard_chunks(self.grid, self.pids, self.chunks)

    def _padded(self, block: np.ndarray) -> np.ndarray:
        """``block`` padded to the full chunk shape, flattened to [positions, channels]."""
        self._scratch[tuple(slice(0, s) for s in block.shape[:-1])] = block
        self.stats["chunks_read"] += 1
        self.stats["bytes_read"] += block.nbytes
        return self._scratch.reshape(-1, self.signal.channels)

    def _gather(self, window: int) -> None:
        """Fill the values of ``window``, reading each chunk it samples once, in storage order."""
        t0 = time.perf_counter()
        ids, starts, order, offset = self._group(window * self.window)
        out = self._values[window % 2].reshape(-1, self.signal.channels)
        blocks = self.source.read([(c, self.chunk_box(c)) for c in ids.tolist()])
        try:
            for a, b, block in zip(starts[:-1], starts[1:], blocks):
                samples = order[a:b]
                out[samples] = self._padded(block)[offset[samples]]
        finally:
            blocks.close()
        self.stats["gather_s"] += time.perf_counter() - t0
        self.stats["windows"] += 1

    def _enter(self, window: int) -> None:
        """Make ``window``'s values ready (waiting for the gather if it is still running) and
        start gathering the next window's."""
        if window == self._current:
            return
        t0 = time.perf_counter()
        pending, self._pending = self._pending, None
        if pending is not None:
            pending[1].result()  # it writes the other buffer: let it finish first
        if pending is None or pending[0] != window:
            self._gather(window)
        self.stats["wait_s" if pending is not None and pending[0] == window else "fill_s"] += \
            time.perf_counter() - t0
        self._current = window
        self._pending = (window + 1, self._executor.submit(self._gather, window + 1))

    # -- sampling -----------------------------------------------------------------------------
    def positions(self, step: int) -> np.ndarray:
        """Sample positions of ``step``, clamped into the signal: int64 [P, n, ndim]."""
        return random_positions(self.grid, self.pids, self.n, self.seed, step)

    def batch(self, step: int) -> Batch:
        window = step // self.window
        self._enter(window)
        pos, raw = self.positions(step), self._values[window % 2][step - window * self.window]
        return Batch(to_device(self.grid.normalise(pos), self.device),
                     to_device(self.signal.normalise(raw), self.device))

    def close(self) -> None:
        """Stop the background gather (after the one in flight, if any)."""
        if self._pending is not None:
            self._pending[1].cancel()
            self._pending = None
        self._executor.shutdown(wait=True)
