"""Training batches: n samples from each partition of a shard, as [P_r, n, dims] tensors.

Which positions a partition draws at a step depends only on (seed, partition id, step): they
come from a counter-based hash, not from a stateful generator. A partition therefore sees the
same samples whichever worker owns it and however many workers there are, and a resumed run
draws what an uninterrupted one would.

Modes (``distlg.data.sampler.make_sampler`` picks one):

- ``full``: every position of every sampling box, every step (small signals, the paper's images
  and audio); computed once.
- ``resident`` (``distlg.data.resident``): the shard's region of the signal (its partitions'
  halo-grown boxes) is read once into memory in its raw dtype; each step gathers n random
  positions per partition (on a GPU the region is held and the positions drawn on the GPU,
  ``DeviceDraws``).
- ``streaming`` (``distlg.data.stream``): the region does not fit the memory budget; a background
  thread reads the store chunk by chunk and gathers the values of the next steps' samples, the
  same samples the resident mode would draw.

This module holds what both modes share: the draws, ``Batch``, the ``Sampler`` protocol.
Every sampler serves any step on demand (``batch(step)``), so all workers yield exactly as
many batches as there are steps, whatever their data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import torch

from ..errors import DistlgError
from ..geometry import PartitionGrid
from .signal import Signal

_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a bijection on uint64 that scrambles every bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * _M1
    x = x ^ (x >> np.uint64(27))
    x = x * _M2
    return x ^ (x >> np.uint64(31))


def uniform_unit(seed: int, step: int, pids: np.ndarray, n: int) -> np.ndarray:
    """Doubles in [0, 1), shape [len(pids), n], a function of (seed, step, pid, k) only."""
    key = step_key(seed, step)
    with np.errstate(over="ignore"):
        base = _mix(pids.astype(np.uint64) * _GOLDEN ^ key[0]) ^ key[1]
        counter = np.arange(n, dtype=np.uint64) * _GOLDEN
        bits = _mix(base[:, None] + counter[None, :])
    return (bits >> np.uint64(11)).astype(np.float64) * (1.0 / 2.0**53)  # top 53 bits


def step_key(seed: int, step: int) -> tuple[np.uint64, np.uint64]:
    """The two words that (seed, step) contribute to every draw of the step."""
    with np.errstate(over="ignore"):
        key = _mix(np.asarray([seed, step], dtype=np.uint64) * _GOLDEN + np.uint64(1))
    return key[0], key[1]


def uniform_indices(seed: int, step: int, pids: np.ndarray, n: int, size: int) -> np.ndarray:
    """Integers in [0, size), shape [len(pids), n], a function of (seed, step, pid, k) only."""
    return (uniform_unit(seed, step, pids, n) * size).astype(np.int64)


def random_positions(grid: PartitionGrid, pids: Sequence[int], n: int, seed: int,
                     step: int) -> np.ndarray:
    """n positions per partition, uniform over its sampling box, clamped into the signal:
    int64 [len(pids), n, ndim]."""
    pids = np.asarray(pids, dtype=np.int64)
    box = grid.sample_shape
    flat = uniform_indices(seed, step, pids, n, math.prod(box))
    offset = np.stack(np.unravel_index(flat, box), axis=-1)
    return grid.clamp(grid.sample_starts(pids)[:, None, :] + offset)


def all_positions(grid: PartitionGrid, pids: Sequence[int]) -> np.ndarray:
    """Every position of each sampling box, clamped: int64 [len(pids), prod(box), ndim]."""
    box = grid.sample_shape
    offset = np.stack(np.unravel_index(np.arange(math.prod(box)), box), axis=-1)
    return grid.clamp(grid.sample_starts(pids)[:, None, :] + offset[None])


def shard_region(grid: PartitionGrid, pids: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """Bounding box, inside the signal, of the sampling boxes of ``pids``."""
    starts = grid.sample_starts(pids)
    lo = starts.min(axis=0)
    hi = np.minimum(starts.max(axis=0) + np.asarray(grid.sample_shape), grid.shape)
    return tuple((int(a), int(b)) for a, b in zip(lo, hi))


@dataclass
class Batch:
    coords: torch.Tensor
    """[P_r, n, dims] coordinates in [-1, 1]."""
    values: torch.Tensor
    """[P_r, n, channels] values in [-1, 1]."""


_COPY_STREAMS: dict[torch.device, "torch.cuda.Stream"] = {}


def to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """``array`` on ``device``. To a GPU: from pinned memory, without blocking, on a stream of
    its own, so the copy runs while the kernels of the step in flight still run (on the
    compute stream it would queue behind them); the compute stream waits for it."""
    t = torch.from_numpy(array)
    if device.type != "cuda":
        return t.to(device)
    if device not in _COPY_STREAMS:
        _COPY_STREAMS[device] = torch.cuda.Stream(device)
    copies, compute = _COPY_STREAMS[device], torch.cuda.current_stream(device)
    with torch.cuda.stream(copies):
        out = t.pin_memory().to(device, non_blocking=True)
    compute.wait_stream(copies)
    out.record_stream(compute)  # its memory is not reused before the compute stream is done
    return out


def _signed(words: np.ndarray | np.uint64) -> np.ndarray:
    """uint64 words as the int64 values with the same bits (torch computes on those)."""
    return np.asarray(words, dtype=np.uint64).view(np.int64)


def _shr(x: torch.Tensor, s: int) -> torch.Tensor:
    """x >> s on the bits of int64 x as if unsigned (a logical shift)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def _mix_t(x: torch.Tensor) -> torch.Tensor:
    """``_mix`` on int64 tensors: wrapping products and XOR keep the uint64 bits."""
    x = x ^ _shr(x, 30)
    x = x * int(_signed(_M1))
    x = x ^ _shr(x, 27)
    x = x * int(_signed(_M2))
    return x ^ _shr(x, 31)


class DeviceDraws:
    """A resident shard's batches drawn where its data lives (the GPU): the counter-based hash
    in int64 arithmetic, the gather and the normalisation on the device, so a step moves
    nothing from the host. Every batch equals the host's (``ResidentSampler``) bit for bit;
    everything fixed is laid out once here."""

    def __init__(self, signal: Signal, grid: PartitionGrid, pids: Sequence[int], n: int,
                 seed: int, region: tuple[tuple[int, int], ...], data: np.ndarray,
                 device: torch.device):
        ids = np.asarray(pids, dtype=np.int64)
        with np.errstate(over="ignore"):
            keyed = ids.astype(np.uint64) * _GOLDEN
            counter = np.arange(n, dtype=np.uint64) * _GOLDEN

        def put(array: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array)).to(device)

        self.signal, self.seed, self.n, self.box = signal, seed, n, grid.sample_shape
        self.keyed, self.counter = put(_signed(keyed)), put(_signed(counter))
        self.starts = put(grid.sample_starts(ids))
        self.last = put(np.asarray(grid.shape, dtype=np.int64) - 1)
        self.scale = put(2.0 / np.maximum(np.asarray(grid.extent, dtype=np.float64) - 1, 1))
        self.origin = put(np.asarray([a for a, _ in region], dtype=np.int64))
        self.strides = put(np.asarray([math.prod(data.shape[i + 1:-1]) for i in range(grid.ndim)],
                                      dtype=np.int64))
        self.data = put(data.reshape(-1, data.shape[-1]))

    def batch(self, step: int) -> Batch:
        k0, k1 = (int(_signed(k)) for k in step_key(self.seed, step))
        base = _mix_t(self.keyed ^ k0) ^ k1
        bits = _mix_t(base[:, None] + self.counter[None, :])
        unit = _shr(bits, 11).to(torch.float64) * (1.0 / 2.0**53)
        rest = (unit * math.prod(self.box)).to(torch.int64)
        offset = []
        for size in reversed(self.box):  # C-order unravel, as np.unravel_index
            offset.append(rest % size)
            rest = rest // size
        pos = torch.minimum(self.starts[:, None, :] + torch.stack(offset[::-1], dim=-1), self.last)
        coords = (pos.to(torch.float64) * self.scale - 1.0).to(torch.float32)
        raw = self.data[((pos - self.origin) * self.strides).sum(-1)]
        lo, hi = self.signal.value_range
        values = (raw.to(torch.float32) - lo) * (2.0 / (hi - lo)) - 1.0
        return Batch(coords, values)


class SamplerError(DistlgError):
    """The sampler cannot serve this shard as configured."""


class Sampler(Protocol):
    """What the trainer asks of a sampler (resident, full batch or streaming)."""

    mode: str

    def batch(self, step: int) -> Batch: ...

    def describe(self) -> str: ...

    def close(self) -> None: ...


def check_seed(seed: int) -> int:
    """Seeds are non-negative: they key counter-based hashes (uint64) and the model's
    generators alike."""
    if int(seed) < 0:
        raise SamplerError(f"seed must be >= 0, got {seed}")
    return int(seed)
