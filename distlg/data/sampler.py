"""Which sampler serves a worker's shard: resident (or full batch) when its region of the
signal fits the memory budget, else streaming; always streaming when its chunks come from a
pack (``distlg pack``). Both draw the same samples (``draws``)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..defaults import MEMORY_BUDGET
from ..geometry import PartitionGrid
from .draws import SamplerError, shard_region
from .resident import ResidentSampler
from .signal import Signal
from .stream import ChunkSource, StreamingSampler


def make_sampler(signal: Signal, grid: PartitionGrid, pids: Sequence[int], n: int | None,
                 seed: int = 0, memory_budget: int = MEMORY_BUDGET, device: str | torch.device = "cpu",
                 window: int | None = None, source: ChunkSource | None = None,
                 ) -> ResidentSampler | StreamingSampler:
    """The sampler for one worker's shard: resident (or full batch) when its region of the
    signal fits ``memory_budget`` bytes, else streaming (``window``: steps per streaming window,
    instead of what the budget gives). Both modes yield the same batches. With ``source`` (a
    pack's chunks) the sampler streams from it whatever the budget."""
    if source is not None:
        if n is None:
            raise SamplerError("a pack is read by the streaming sampler, which draws samples: "
                               "full-batch training cannot use one; set a sample fraction")
        return StreamingSampler(signal, grid, pids, n, seed, memory_budget, device, window, source)
    region = shard_region(grid, pids)
    nbytes = math.prod(b - a for a, b in region) * signal.channels * np.dtype(signal.data.dtype).itemsize
    if nbytes <= memory_budget:
        return ResidentSampler(signal, grid, pids, n, seed, device)
    if n is None:
        raise SamplerError(f"full-batch training reads this worker's whole region of the signal, "
                           f"{nbytes / 2**30:.2f} GiB, over the memory budget of "
                           f"{memory_budget / 2**30:.2f} GiB; set a sample fraction to stream it")
    return StreamingSampler(signal, grid, pids, n, seed, memory_budget, device, window)
