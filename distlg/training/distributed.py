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

import contextlib
import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Iterator

import torch
import torch.distributed as dist

from ..errors import WorkerLost
from ..nn.model import INR

COLLECTIVE_TIMEOUT = timedelta(seconds=60)
"""How long a collective may wait for a peer before the job fails instead of hanging."""

BACKEND_DEVICES = {"nccl": ("cuda",), "gloo": ("cpu",), "mpi": ("cpu",)}
"""Device types whose tensors each process-group backend can reduce (NCCL: CUDA tensors only)."""


class CollectiveDeviceError(RuntimeError):
    """A tensor was handed to a collective on a device its process group cannot use."""


@dataclass
class World:
    """This process's place in the job, from accelerate (or a plain single process)."""

    rank: int = 0
    size: int = 1
    local_size: int = 1
    device: torch.device = torch.device("cpu")
    accelerator: Any = None
    backend: str | None = None
    """The process group's backend (nccl, gloo, ...; None: no group). Tensors handed to
    ``all_reduce_`` must be on a device type it supports (``BACKEND_DEVICES``): checked on every
    call, so a CPU run over gloo also proves that no collective gets a tensor NCCL would refuse
    as long as tensors follow ``device``."""

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
        if not (dist.is_available() and dist.is_initialized()):
            # accelerate keeps one device per process: a second run in this process (the Python
            # API, tests) on another device would silently keep the first run's
            from accelerate.state import AcceleratorState

            AcceleratorState._reset_state(reset_partial_state=True)
        acc = Accelerator(cpu=cpu, log_with="tensorboard" if log_dir else None,
                          project_dir=log_dir,
                          kwargs_handlers=[InitProcessGroupKwargs(timeout=COLLECTIVE_TIMEOUT)])
        local = int(os.environ.get("LOCAL_WORLD_SIZE", acc.num_processes))
        backend = dist.get_backend() if dist.is_available() and dist.is_initialized() else None
        return cls(acc.process_index, acc.num_processes, max(1, local), acc.device, acc, backend)

    @property
    def collectives(self) -> bool:
        """Whether collectives run: several workers, or a process group of one (``accelerate
        launch`` on one GPU forms an NCCL group of size 1, which then runs every collective)."""
        return self.distributed or self.backend is not None

    def check_device(self, tensor: torch.Tensor) -> None:
        """``CollectiveDeviceError`` unless the backend can reduce a tensor on ``tensor.device``."""
        allowed = BACKEND_DEVICES.get(self.backend or "", None)
        if allowed is None and self.backend and ":" in self.backend:  # e.g. "cpu:gloo,cuda:nccl"
            allowed = tuple(part.split(":")[0] for part in self.backend.split(","))
        if allowed is not None and tensor.device.type not in allowed:
            raise CollectiveDeviceError(
                f"a {tensor.device.type} tensor was handed to a collective of the {self.backend} "
                f"group, which takes {' or '.join(allowed)} tensors only")

    def default_threads(self) -> int:
        return max(1, (os.cpu_count() or 1) // self.local_size)

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over workers, in place; ``WorkerLost`` if a peer is gone.

        ``tensor`` must live where the group's backend reduces (``check_device``): for NCCL on
        the GPU, for gloo on the CPU. Host values go through ``sum_values``."""
        self.check_device(tensor)
        if self.collectives:
            with self._peers():
                dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    @contextlib.contextmanager
    def _peers(self) -> Iterator[None]:
        """Run a collective: a dead or silent peer (gloo and NCCL raise a RuntimeError, a
        DistBackendError among them) becomes one ``WorkerLost`` line."""
        try:
            yield
        except RuntimeError as exc:
            reason = str(exc).strip().split("\n")[0]
            reason = reason.split("] ", 1)[-1].split(". ")[0]
            raise WorkerLost(f"worker {self.rank} lost contact with the others ({reason})") from None

    def sum_values(self, values: list[float]) -> list[float]:
        """Host numbers summed over workers, exactly in float64 and in rank order whatever the
        backend: they travel as Python objects, so no tensor meets the group's device rule."""
        if not self.collectives:
            return list(values)
        gathered = self.all_gather([float(v) for v in values])
        return [float(sum(column)) for column in zip(*gathered)]

    def all_gather(self, obj: Any) -> list[Any]:
        """Small Python objects from every worker (metadata only, never weights)."""
        if not self.collectives:
            return [obj]
        out: list[Any] = [None] * self.size
        with self._peers():
            dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.collectives:
            with self._peers():
                dist.barrier()

    def close(self) -> None:
        """Finish trackers and leave the process group."""
        if self.accelerator is not None:
            self.accelerator.end_training()


class GlobalGradBucket:
    """The replicated tensors' gradients laid out in one flat buffer, plus a few scalars.

    ``reduce(extras)`` sums the gradients and ``extras`` (per-step statistics such as the loss,
    0-d tensors on the model's device) over all workers in a single all-reduce and returns the
    summed extras as a tensor view on the device: nothing is read back to the host, so a step
    never waits for the GPU. The view is overwritten by the next ``reduce``. ``tensors``: whose
    gradients are summed (default: the model's replicated parameters; an INCODE run sums its
    coefficients' gradient in place of the harmonizer's, ``distlg.nn.incode.StepCoefficients``).

    ``exact``: the buffer holds float64 sums that the step adds to (``sum_of``, see
    ``distlg.training.exact``); ``reduce`` all-reduces them in float64, rounds each total into
    its tensor's float32 ``.grad`` once and clears the sums for the next step.
    """

    def __init__(self, model: INR, world: World, extras: int = 2,
                 tensors: list[torch.Tensor] | None = None, exact: bool = False):
        self.world = world
        params = model.global_parameters() if tensors is None else tensors
        self.numel = sum(p.numel() for p in params)
        self.buffer = torch.zeros(self.numel + extras, device=model.coord_scale.device,
                                  dtype=torch.float64 if exact else torch.float32)
        self.sums: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        offset = 0
        for p in params:
            view = self.buffer[offset:offset + p.numel()].view_as(p)
            if exact:
                self.sums[id(p)] = (p, view)
                p.grad = torch.zeros_like(p)
            else:
                p.grad = view
            offset += p.numel()

    def sum_of(self, tensor: torch.Tensor) -> torch.Tensor:
        """The float64 sum ``tensor``'s gradient is collected in (an ``exact`` bucket)."""
        return self.sums[id(tensor)][1]

    @property
    def bytes_per_step(self) -> int:
        """Bytes each worker all-reduces per step: the replicated gradients and the extras."""
        return self.buffer.numel() * self.buffer.element_size()

    def reduce(self, *extras: torch.Tensor | float) -> torch.Tensor:
        tail = self.buffer[self.numel:]
        tail.zero_()
        for i, value in enumerate(extras):
            tail[i].copy_(value if isinstance(value, torch.Tensor) else torch.tensor(value))
        self.world.all_reduce_(self.buffer)
        for p, total in self.sums.values():  # exact: round each total once, clear the sums
            p.grad.copy_(total)
            total.zero_()
        return tail[:len(extras)]
