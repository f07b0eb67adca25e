"""Extend: encode samples appended to a signal (frames after the last one) with new partitions.

The model's partition grid is continued along the first axis with partitions of the same size.
Partition ids are the C-order ravel of the per-axis index, so the old partitions keep their ids
and boxes and the new ones follow them; the coordinate extent stays what the model was trained
on, so old positions keep their coordinates and new ones run beyond 1. Only the new partitions'
local sub-networks train (fresh, each seeded by its id), against the global branch and merge
loaded from the model and frozen. The result is one model covering both parts: the old files
are linked unchanged, so the old region renders bit for bit as before.

One process (the new partitions are trained together here, not sharded over workers).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..data.sampler import make_sampler
from ..data.signal import Signal
from ..errors import DistlgError
from ..geometry import PartitionGrid
from ..metrics import evaluate
from ..nn import fused
from ..nn.model import INR
from ..plan import DEFAULT_FRACTION, DEFAULT_LR, DEFAULT_STEPS
from ..train import scheduled_lr
from .format import (
    ModelDir,
    link_or_copy,
    manifest_for,
    new_directory,
    partition_file,
    write_manifest,
    write_tensors,
)


class ExtendError(DistlgError):
    """A model and signal that cannot be combined by extension."""


@dataclass
class ExtendSettings:
    """How the new partitions train; defaults are the trainer's for the signal's kind."""

    steps: int | None = None
    """Optimisation steps. Default: 2000 for images, 1000 for audio, 1500 otherwise."""
    lr: float | None = None
    """Adam learning rate. Default: 5e-4 for images, 1e-4 otherwise."""
    samples_per_partition: int | None = None
    """Samples drawn from each new partition per step. Default: the trainer's share for the
    kind (2 % of a partition for video and volumes; every position for images and audio)."""
    schedule: str = "constant"
    """Learning-rate schedule: constant, or cosine decay to ``lr_final`` x lr."""
    lr_final: float = 0.05
    """Final learning rate of the cosine schedule, as a fraction of lr."""
    seed: int = 0
    """Seed of the new partitions' initialisation and of their sampling."""
    memory_budget_gib: float = 4.0
    """Decoded signal data the sampler may hold (the new partitions' region)."""
    device: str = "cpu"
    progress: bool = False


@dataclass
class ExtendResult:
    path: Path
    grid: PartitionGrid
    new_partitions: list[int]
    steps: int
    seconds: float
    psnr: float
    """PSNR of the new region, rendered by the new partitions."""
    params_before: dict[str, int]
    params_after: dict[str, int]


def extended_grid(old: PartitionGrid, shape: tuple[int, ...]) -> PartitionGrid:
    """``old`` continued along the first axis to cover ``shape``, with the same partition size,
    halo and coordinate extent."""
    if len(shape) != old.ndim or tuple(shape[1:]) != old.shape[1:]:
        raise ExtendError(f"the signal has shape {tuple(shape)}; extending a model of shape "
                            f"{old.shape} needs the same sizes after the first axis")
    if shape[0] <= old.shape[0]:
        raise ExtendError(f"the signal has {shape[0]} samples along the first axis, no more "
                            f"than the model's {old.shape[0]}: nothing to extend")
    part = old.part_shape[0]
    if old.padding[0]:
        raise ExtendError(f"the model's last partition along the first axis is padded ({old.shape[0]} "
                            f"samples in partitions of {part}); new samples would fall into it")
    grid = PartitionGrid(tuple(shape), (math.ceil(shape[0] / part),) + old.factors[1:],
                         old.overlaps, old.extent)
    if grid.part_shape != old.part_shape:
        raise ExtendError(f"{shape[0]} samples do not split into partitions of {part} "
                            "samples without an empty one; append more or fewer")
    return grid


def _check_signal(md: ModelDir, signal: Signal) -> None:
    s = md.signal
    if signal.kind != s["kind"] or signal.channels != int(s["channels"]):
        raise ExtendError(f"the model encodes a {s['kind']} with {s['channels']} channels, the "
                            f"signal is a {signal.kind} with {signal.channels}")
    if list(signal.value_range) != [float(v) for v in s["value_range"]]:
        raise ExtendError(f"the signal's value range {signal.value_range} differs from the "
                            f"model's {tuple(s['value_range'])}: its values would normalise "
                            "differently")


def _samples(settings: ExtendSettings, kind: str, grid: PartitionGrid) -> int | None:
    if settings.samples_per_partition is not None:
        return settings.samples_per_partition
    fraction = DEFAULT_FRACTION.get(kind)
    return None if fraction is None else max(1, round(fraction * math.prod(grid.part_shape)))


def _train(model: INR, signal: Signal, grid: PartitionGrid, settings: ExtendSettings) -> int:
    """Train the local sub-networks of ``model`` (the new partitions) with the global tensors
    frozen: Adam sees only the local ones. Returns the number of steps run."""
    kind = signal.kind
    steps = DEFAULT_STEPS.get(kind, 1500) if settings.steps is None else settings.steps
    lr = DEFAULT_LR.get(kind, 1e-4) if settings.lr is None else settings.lr
    if steps < 1 or lr <= 0:
        raise ExtendError(f"extending needs steps >= 1 and lr > 0, got {steps} and {lr}")
    if settings.schedule not in ("constant", "cosine"):
        raise ExtendError(f"schedule must be constant or cosine, got {settings.schedule!r}")
    pids = model.partition_ids
    n = _samples(settings, kind, grid)
    sampler = make_sampler(signal, grid, pids, n, settings.seed,
                           int(settings.memory_budget_gib * 2**30), settings.device)
    scale = 1.0 / (len(pids) * (n or math.prod(grid.sample_shape)) * signal.channels)
    optimizer = torch.optim.Adam(model.local_parameters(), lr=lr)
    try:
        for step in tqdm(range(steps), unit="step", disable=not settings.progress):
            optimizer.param_groups[0]["lr"] = scheduled_lr(lr, step, steps, settings.schedule,
                                                           settings.lr_final)
            batch = sampler.batch(step)
            fused.forward_backward(model, batch.coords, batch.values, scale)
            optimizer.step()
            for p in model.parameters():  # the frozen global gradients are dropped too
                p.grad.zero_()
    finally:
        sampler.close()
    return steps


def extend(model: str | Path | ModelDir, signal: Signal, out: str | Path | None = None,
           settings: ExtendSettings | None = None) -> ExtendResult:
    """Extend ``model`` to ``signal`` (its samples followed by new ones along the first axis),
    writing the result to the new directory ``out``, or into the model when ``out`` is None
    (new files first, then the manifest)."""
    settings = settings or ExtendSettings()
    md = model if isinstance(model, ModelDir) else ModelDir.open(model)
    if md.is_checkpoint:
        raise ExtendError(f"{md.path} is a checkpoint; export it (distlg export) and extend that")
    _check_signal(md, signal)
    grid = extended_grid(md.grid, signal.shape)
    new = list(range(md.grid.num_partitions, grid.num_partitions))
    path = md.path if out is None else new_directory(out, md.path)  # refused before training
    inr = INR(md.arch, new, seed=settings.seed)
    inr.load_global(md.read_global())
    inr = inr.to(settings.device)
    t0 = time.perf_counter()
    steps = _train(inr, signal, grid, settings)
    seconds = time.perf_counter() - t0
    entries = [dict(e) for e in md.manifest["partitions"]]
    if out is not None:
        for name in [md.manifest["global"]["file"]] + [e["file"] for e in entries]:
            link_or_copy(md.path / name, path / name)
    for pid in new:
        entries.append({"id": pid, **write_tensors(path, partition_file(pid), inr.local_state(pid),
                                                   {"partition": str(pid)})})
    info = {**md.signal, "shape": list(signal.shape)}
    write_manifest(path, manifest_for(grid, md.arch, info, dict(md.manifest["global"]), entries))
    score = evaluate(inr, grid, signal, new).psnr
    return ExtendResult(path, grid, new, steps, seconds, score, md.params(),
                        ModelDir.open(path).params())
