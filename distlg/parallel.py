"""How a Local-Global INR is parallelised: local shards owned, the global branch replicated.

Each worker holds the local sub-networks of its own block of partitions (``geometry.shard``)
and a full copy of the global branch and merge. After every backward pass the replicated
tensors' gradients are summed across workers in one flat bucket: their ``.grad`` are views into
that bucket, so the all-reduce needs no copies. Local gradients never leave the worker. The loss
is normalised by the sample count of all workers together, so N workers compute what one
process computes. The model is deliberately not wrapped in DistributedDataParallel, which would
overwrite and average the local weights that differ from worker to worker.

This is the only module that talks to torch.distributed and accelerate: the trainer and
checkpointing reach them through ``World``, and ``tests/test_layout.py`` keeps them out of the
model and data rooms.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from .errors import WorkerLost
from .nn.model import INR

COLLECTIVE_TIMEOUT = timedelta(seconds=60)
"""How long a collective may wait for a peer before the job fails instead of hanging."""


@dataclass
class World:
    """This process's place in the job, from accelerate (or a plain single process)."""

    rank: int = 0
    size: int = 1
    local_size: int = 1
    device: torch.device = torch.device("cpu")
    accelerator: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @classmethod
    def start(cls, device: str | None = None, log_dir: str | None = None) -> "World":
        """Join the job started by ``accelerate launch`` / ``torchrun``, or run alone.

        On a machine without CUDA the accelerator is told to use the CPU, which makes
        ``--multi_gpu`` launches form a gloo group of CPU processes.
        """
        from accelerate import Accelerator, InitProcessGroupKwargs

        cpu = device == "cpu" or (device is None and not torch.cuda.is_available())
        acc = Accelerator(cpu=cpu, log_with="tensorboard" if log_dir else None,
                          project_dir=log_dir,
                          kwargs_handlers=[InitProcessGroupKwargs(timeout=COLLECTIVE_TIMEOUT)])
        local = int(os.environ.get("LOCAL_WORLD_SIZE", acc.num_processes))
        return cls(acc.process_index, acc.num_processes, max(1, local), acc.device, acc)

    def default_threads(self) -> int:
        return max(1, (os.cpu_count() or 1) // self.local_size)

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over workers, in place; ``WorkerLost`` if a peer is gone."""
        if self.distributed:
            try:
                dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
            except RuntimeError as exc:  # gloo/NCCL report a dead or silent peer this way
                reason = str(exc).split("\n")[0]
                reason = reason.split("] ", 1)[-1].split(". ")[0]
                raise WorkerLost(f"worker {self.rank} lost contact with the others ({reason})") from None
        return tensor

    def all_gather(self, obj: Any) -> list[Any]:
        """Small Python objects from every worker (metadata only, never weights)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        """Finish trackers and leave the process group."""
        if self.accelerator is not None:
            self.accelerator.end_training()


class GlobalGradBucket:
    """The replicated tensors' gradients laid out in one flat buffer, plus a few scalars.

    ``reduce(extras)`` sums the gradients and ``extras`` (per-step statistics such as the loss)
    over all workers in a single all-reduce and returns the summed extras.
    """

    def __init__(self, model: INR, world: World, extras: int = 2):
        self.world = world
        params = model.global_parameters()
        self.numel = sum(p.numel() for p in params)
        self.buffer = torch.zeros(self.numel + extras, device=model.coord_scale.device)
        offset = 0
        for p in params:
            p.grad = self.buffer[offset:offset + p.numel()].view_as(p)
            offset += p.numel()

    @property
    def bytes_per_step(self) -> int:
        """Bytes each worker all-reduces per step: the replicated gradients and the extras."""
        return self.buffer.numel() * self.buffer.element_size()

    def reduce(self, *extras: float) -> list[float]:
        tail = self.buffer[self.numel:]
        tail.zero_()
        tail[:len(extras)] = torch.tensor(extras, dtype=tail.dtype)
        self.world.all_reduce_(self.buffer)
        return tail[:len(extras)].tolist()
