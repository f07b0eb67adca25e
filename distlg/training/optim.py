"""Optimisation: Adam with the replicated part in its own group, the learning-rate schedule,
and the step loop that ``train`` and ``extend`` both run.

A step: set the scheduled rate, draw the step's batch, run the fused forward and backward,
reduce (the trainer all-reduces the replicated gradients and the loss here), step Adam, and
zero the gradients in place (the replicated ones are views into the all-reduce bucket).
"""

from __future__ import annotations

import math
import signal
import threading
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator

import torch
from torch import Tensor

from ..data.draws import Sampler
from ..nn import fused
from ..nn.model import INR

StepFn = Callable[[INR, Tensor, Tensor, float], Tensor]
"""A training step: add the gradient of ``scale * sse`` to every ``.grad``, return sse."""


def scheduled_lr(lr: float, step: int, steps: int, schedule: str, final: float) -> float:
    """The learning rate at ``step``: ``lr`` (constant), or cosine decay from ``lr`` to
    ``final * lr`` over ``steps``."""
    if schedule != "cosine":
        return lr
    return lr * (final + 0.5 * (1 - final) * (1 + math.cos(math.pi * step / steps)))


def make_optimizer(model: INR, lr: float, global_lr: float = 1.0,
                   train_global: bool = True) -> torch.optim.Adam:
    """Adam over the model; a Local-Global model's replicated part (global branch, merge) steps
    at ``global_lr * lr``, its local sub-networks at ``lr``. Every step of the replicated part
    moves the whole signal at once, where a local step moves one partition. Without
    ``train_global`` the replicated part is frozen (extend): Adam sees the local tensors only."""
    shared = global_lr if model.arch.base == "local-global" else 1.0
    groups = [(model.local_parameters(), 1.0)]
    if train_global:
        groups.append((model.global_parameters(), shared))
    return torch.optim.Adam([{"params": params, "lr": lr * scale, "lr_scale": scale}
                             for params, scale in groups if params])


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Every group at ``lr`` times its scale."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]


def run_steps(model: INR, optimizer: torch.optim.Optimizer, sampler: Sampler,
              lr_at: Callable[[int], float], steps: Iterable[int], scale: float,
              reduce: Callable[[Tensor], Tensor] = lambda sse: sse,
              after: Callable[[int, Tensor], None] | None = None,
              forward_backward: StepFn = fused.forward_backward) -> None:
    """Train ``model`` on ``steps`` (see the module docstring). ``scale`` normalises the sum of
    squared errors into the loss (1 / samples of all workers / channels); ``reduce`` sums it
    over workers; ``after(done, sse)`` runs after each step (logging, evaluation, checkpoints)
    with the summed squared error as a tensor on the device: nothing here reads it back, so a
    GPU step never waits for the host. ``forward_backward`` is the step of the run's precision
    and kernel (``distlg.training.steps``)."""
    with interrupts_between_steps() as check:
        for step in steps:
            set_lr(optimizer, lr_at(step))
            batch = sampler.batch(step)
            sse = reduce(forward_backward(model, batch.coords, batch.values, scale))
            optimizer.step()
            model.zero_grad(set_to_none=False)
            if after is not None:
                after(step + 1, sse)
            check()


@contextmanager
def interrupts_between_steps() -> Iterator[Callable[[], None]]:
    """Hold a Ctrl-C (SIGINT) that arrives during a step until the step, and what runs after
    it, is done: the yielded check raises ``KeyboardInterrupt`` then, so a checkpoint written
    on an interrupt never holds a half-applied Adam step. Outside the main thread (where no
    handler can be set) interrupts are left as they are."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))

    def check() -> None:
        if caught:
            raise KeyboardInterrupt

    try:
        yield check
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.SIG_DFL)
