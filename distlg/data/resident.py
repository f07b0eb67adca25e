"""The resident sampler: a shard's region of the signal held in memory (or on the GPU), and
every step's samples gathered from it (``draws`` says which)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..geometry import PartitionGrid
from .draws import Batch, DeviceDraws, all_positions, check_seed, random_positions, shard_region, to_device
from .signal import Signal


class ResidentSampler:
    """Samples from the shard's region held in memory in the signal's raw dtype."""

    def __init__(self, signal: Signal, grid: PartitionGrid, pids: Sequence[int], n: int | None,
                 seed: int = 0, device: str | torch.device = "cpu", on_device: bool | None = None):
        """``on_device``: hold the data on ``device`` and draw batches there (``DeviceDraws``);
        default: on a GPU where the data takes at most a quarter of its free memory."""
        if tuple(grid.shape) != signal.shape:
            raise ValueError(f"grid shape {grid.shape} does not match signal shape {signal.shape}")
        self.signal, self.grid, self.pids = signal, grid, [int(p) for p in pids]
        self.seed, self.device = check_seed(seed), torch.device(device)
        self.full = n is None
        self.n = math.prod(grid.sample_shape) if n is None else int(n)
        self.region = shard_region(grid, self.pids)
        self.data: np.ndarray | None = signal.read(self.region)
        self.resident_bytes = int(self.data.nbytes)
        self.mode = "full" if self.full else "resident"
        self._fixed: Batch | None = None
        if on_device is None:
            on_device = self.device.type == "cuda" and \
                self.resident_bytes <= torch.cuda.mem_get_info(self.device)[0] // 4
        self._draws = None
        if on_device and not self.full:  # the data moves to the device: no host copy is kept
            self._draws = DeviceDraws(signal, grid, self.pids, self.n, self.seed, self.region,
                                      self.data, self.device)
            self.data = None

    def describe(self) -> str:
        what = "every position of every box each step" if self.full else f"{self.n} samples per partition"
        where = f"on {self.device.type}, drawn there" if self._draws else "in memory"
        return f"{self.mode}: {self.resident_bytes / 2**20:.0f} MiB of the signal {where}; {what}"

    def close(self) -> None:
        """Release background resources (none for this sampler)."""

    def positions(self, step: int) -> np.ndarray:
        if self.full:
            return all_positions(self.grid, self.pids)
        return random_positions(self.grid, self.pids, self.n, self.seed, step)

    def batch(self, step: int) -> Batch:
        if self.full and self._fixed is not None:
            return self._fixed
        if self._draws is not None:
            return self._draws.batch(step)
        pos = self.positions(step)
        local = pos - np.asarray([a for a, _ in self.region])
        flat = np.ravel_multi_index(tuple(np.moveaxis(local, -1, 0)), self.data.shape[:-1])
        raw = self.data.reshape(-1, self.data.shape[-1])[flat]
        batch = Batch(to_device(self.grid.normalise(pos), self.device),
                      to_device(self.signal.normalise(raw), self.device))
        if self.full:
            self._fixed = batch
        return batch

