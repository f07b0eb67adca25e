"""Extend: encode samples appended to a signal (frames after the last one) with new partitions.

The model's partition grid is continued along the first axis with partitions of the same size.
Partition ids are the C-order ravel of the per-axis index, so the old partitions keep their ids
and boxes and the new ones follow them; the coordinate extent stays what the model was trained
on, so old positions keep their coordinates and new ones run beyond 1. Only the new partitions'
local sub-networks train (fresh, each seeded by its id), against the global branch and merge
loaded from the model and frozen. The result is one model covering both parts: the old files
are linked unchanged, so the old region renders bit for bit as before.

One process (the new partitions are trained together here, not sharded over workers). The
new partitions train with the trainer's own step loop (``optim.run_steps``), plan
(``plan.steps_plan``) and kind defaults; the global branch is left out of Adam. An INCODE
model's activation coefficients are constants of its global file and stay as they are.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..config import ExtendConfig
from ..data.sampling import make_sampler
from ..data.signal import Signal
from ..errors import DistlgError
from ..geometry import PartitionGrid
from ..metrics import evaluate
from ..nn import fused
from ..nn.model import INR
from ..optim import make_optimizer, run_steps
from ..plan import Plan, steps_plan
from ..resources import usable_device
from ..step import autograd_forward_backward
from .format import (
    ModelDir,
    check_new_directory,
    link_or_copy,
    manifest_for,
    partition_file,
    staged_directory,
    write_manifest,
    write_tensors,
)


class ExtendError(DistlgError):
    """A model and signal that cannot be combined by extension."""


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
    if signal.kind != s.kind or signal.channels != s.channels:
        raise ExtendError(f"the model encodes a {s.kind} with {s.channels} channels, the "
                          f"signal is a {signal.kind} with {signal.channels}")
    if signal.value_range != s.value_range:
        raise ExtendError(f"the signal's value range {signal.value_range} differs from the "
                          f"model's {s.value_range}: its values would normalise differently")


def _train(model: INR, signal: Signal, plan: Plan, settings: ExtendConfig) -> None:
    """Train the local sub-networks of ``model`` (the new partitions) with the global tensors
    frozen, by the trainer's step loop."""
    sampler = make_sampler(signal, plan.grid, model.partition_ids, plan.samples_per_partition,
                           settings.seed, int(settings.memory_budget_gib * 2**30), settings.device)
    optimizer = make_optimizer(model, plan.lr, train_global=False)
    # an INCODE model's coefficients stay the stored constants: the global file is unchanged
    step = autograd_forward_backward if model.arch.incode else fused.forward_backward
    bar = tqdm(total=plan.steps, unit="step", disable=not settings.progress)
    try:
        run_steps(model, optimizer, sampler, plan.lr_at, range(plan.steps),
                  1.0 / (plan.samples_per_step * signal.channels), after=lambda done, loss: bar.update(),
                  forward_backward=step)
    finally:
        bar.close()
        sampler.close()
    if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
        raise ExtendError("training the new partitions gave weights that are not finite (NaN or "
                          "inf): check the signal's new part for NaN values or lower --lr; "
                          "nothing was written")


def extend(model: str | Path | ModelDir, signal: Signal, out: str | Path | None = None,
           settings: ExtendConfig | None = None) -> ExtendResult:
    """Extend ``model`` to ``signal`` (its samples followed by new ones along the first axis),
    writing the result to the new directory ``out``, or into the model when ``out`` is None
    (new files first, then the manifest)."""
    settings = settings or ExtendConfig()
    usable_device(settings.device, ExtendError)
    md = model if isinstance(model, ModelDir) else ModelDir.open(model)
    if md.is_checkpoint:
        raise ExtendError(f"{md.path} is a checkpoint; export it (distlg export) and extend that")
    _check_signal(md, signal)
    if out is not None:  # the files it will copy, checked before anything is written
        md.verify([md.manifest["global"]] + list(md.manifest["partitions"]))
    grid = extended_grid(md.grid, signal.shape)
    new = list(range(md.grid.num_partitions, grid.num_partitions))
    plan = steps_plan(settings, signal.kind, grid, md.arch, math.prod(grid.part_shape), 1, new)
    if out is not None:
        check_new_directory(out, md.path)  # refused before training
    inr = INR(md.arch, new, seed=settings.seed)
    inr.load_global(md.read_global())
    inr = inr.to(settings.device)
    t0 = time.perf_counter()
    _train(inr, signal, plan, settings)
    seconds = time.perf_counter() - t0
    if out is None:
        path = md.path
        _write(md, path, inr, grid, signal, new, copy=False)
    else:
        with staged_directory(out, md.path) as staging:
            _write(md, staging, inr, grid, signal, new, copy=True)
        path = Path(out)
    score = evaluate(inr, grid, signal, new).psnr
    return ExtendResult(path, grid, new, plan.steps, seconds, score, md.params(),
                        ModelDir.open(path).params())


def _write(md: ModelDir, path: Path, inr: INR, grid: PartitionGrid, signal: Signal,
           new: list[int], copy: bool) -> None:
    """The new partitions' files and the extended manifest in ``path``, with the model's own
    files linked there first if ``copy`` (the manifest is written last)."""
    entries = [dict(e) for e in md.manifest["partitions"]]
    if copy:
        for name in [md.manifest["global"]["file"]] + [e["file"] for e in entries]:
            link_or_copy(md.path / name, path / name)
    for pid in new:
        entries.append({"id": pid, **write_tensors(path, partition_file(pid), inr.local_state(pid),
                                                   {"partition": str(pid)})})
    info = md.signal.with_shape(signal.shape)
    write_manifest(path, manifest_for(grid, md.arch, info, dict(md.manifest["global"]), entries))
