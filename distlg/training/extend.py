"""Extend: encode samples appended to a signal (frames after the last one) with new partitions.

The model's partition grid is continued along the first axis with partitions of the same size
(``distlg.modeldir.append``). Only the new partitions' local sub-networks train (fresh, each
seeded by its id), against the global branch and merge loaded from the model and frozen, with
the trainer's own step loop (``optim.run_steps``), plan (``plan.steps_plan``) and kind
defaults; the global branch is left out of Adam. The result is one model covering both parts,
the old files linked unchanged. An INCODE model's activation coefficients are constants of its
global file and stay as they are. One process (the new partitions are trained together here,
not sharded over workers).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import ExtendConfig
from ..data.sampler import make_sampler
from ..data.signal import Signal
from ..geometry import PartitionGrid
from ..modeldir.append import ExtendError, check_signal, extended_grid, write_extended
from ..modeldir.format import ModelDir, check_new_directory
from ..modeldir.output import in_place, output
from ..nn import fused
from ..nn.model import INR
from ..progress import progress
from ..resources import usable_device
from .evaluation import evaluate
from .optim import make_optimizer, run_steps
from .plan import Plan, steps_plan
from .steps import autograd_forward_backward

__all__ = ["ExtendError", "ExtendResult", "extend", "extended_grid"]


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


def _train(model: INR, signal: Signal, plan: Plan, settings: ExtendConfig) -> None:
    """Train the local sub-networks of ``model`` (the new partitions) with the global tensors
    frozen, by the trainer's step loop."""
    sampler = make_sampler(signal, plan.grid, model.partition_ids, plan.samples_per_partition,
                           settings.seed, settings.memory_budget, settings.device)
    optimizer = make_optimizer(model, plan.lr, train_global=False)
    # an INCODE model's coefficients stay the stored constants: the global file is unchanged
    step = autograd_forward_backward if model.arch.incode else fused.forward_backward
    bar = progress(plan.steps, "step", "extend", enabled=settings.progress)
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
    check_signal(md, signal)
    md.verify()  # what it will link, checked before anything is written
    grid = extended_grid(md.grid, signal.shape)
    new = list(range(md.grid.num_partitions, grid.num_partitions))
    resolved = settings.resolved(signal.kind, math.prod(grid.part_shape), 1)
    plan = steps_plan(resolved, grid, md.arch, new)
    if out is not None:
        check_new_directory(out, md.path)  # refused before training
    inr = INR(md.arch, new, seed=settings.seed)
    inr.load_global(md.read_global())
    inr = inr.to(settings.device)
    t0 = time.perf_counter()
    _train(inr, signal, plan, settings)
    seconds = time.perf_counter() - t0
    inr = inr.cpu()
    with (in_place(md) if out is None else output(out, md)) as location:
        write_extended(md, location, inr, grid, signal, new)
    path = md.path if out is None else out
    score = evaluate(inr, grid, signal, new).psnr
    return ExtendResult(path, grid, new, plan.steps, seconds, score, md.params(),
                        ModelDir.open(path).params())


