"""From a config and a signal to everything a run needs: the grid, the architecture, the
schedule and the batch. Defaults that depend on the signal's kind come from ``distlg.defaults``.

``make_plan`` plans a training run; ``steps_plan`` is the part ``extend`` shares with it (how
many steps, at what rate, how many samples per partition).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .. import defaults
from ..config import Config, ConfigError, StepsConfig, TrainConfig
from ..data.signal import Signal
from ..geometry import PartitionGrid
from ..nn.architecture import base_arch
from ..nn.budget import fit_widths
from ..nn.lattice import default_lattice
from ..nn.model import Architecture
from .optim import scheduled_lr


@dataclass(frozen=True)
class Plan:
    grid: PartitionGrid
    arch: Architecture
    steps: int
    lr: float
    global_lr: float
    """Learning rate of a Local-Global model's replicated part, as a fraction of ``lr``."""
    samples_per_partition: int | None
    """None: full batch (every position of every sampling box each step)."""
    schedule: str = "constant"
    lr_final: float = 0.05
    """Final learning rate of the cosine schedule, as a fraction of ``lr``."""
    partitions: tuple[int, ...] | None = None
    """The partitions that train (None: every partition of the grid; extend trains its new
    ones)."""

    @property
    def samples_per_step(self) -> int:
        """Samples of all workers in one step (what the loss is normalised by)."""
        n = self.samples_per_partition or math.prod(self.grid.sample_shape)
        trained = self.grid.num_partitions if self.partitions is None else len(self.partitions)
        return n * trained

    def lr_at(self, step: int) -> float:
        """The (local) learning rate of ``step``."""
        return scheduled_lr(self.lr, step, self.steps, self.schedule, self.lr_final)


def _per_axis(values, ndim: int, name: str) -> tuple[int, ...] | None:
    if values is None:
        return None
    values = list(values)
    if len(values) == 1:
        values = values * ndim
    if len(values) != ndim:
        raise ConfigError(f"{name} needs 1 or {ndim} values for a {ndim}-axis signal, got {len(values)}")
    return tuple(int(v) for v in values)


def make_grid(config: Config, signal: Signal) -> PartitionGrid:
    p, ndim = config.partition, len(signal.shape)
    factors = _per_axis(p.factors, ndim, "factors")
    if base_arch(config.model.arch) == "siren" and factors is None:
        factors = (1,) * ndim
    if factors is None:
        size = _per_axis(p.partition_size, ndim, "partition size") \
            or defaults.partition_size(signal.kind, signal.shape)
        factors = defaults.factors(signal.shape, size)
    overlaps = _per_axis(p.overlaps, ndim, "overlaps")
    if overlaps is None:
        overlaps = defaults.overlaps(signal.kind, factors, config.model.arch)
    return PartitionGrid(signal.shape, factors, overlaps)


def make_arch(config: Config, signal: Signal, grid: PartitionGrid) -> Architecture:
    """Widths from the budget and the recipe's merge (``place_lattice`` then sizes a lattice
    merge's lattice, which depends on the samples per step)."""
    m = config.model
    merge = m.merge or ("shared" if m.recipe == "paper" else "bias")
    common = dict(in_dims=len(signal.shape), out_dims=signal.channels, hidden_layers=m.hidden_layers,
                  merge=merge, w0=m.w0, coord_scale=signal.coord_scale,
                  **lattice_geometry(grid, m.arch, merge))
    if m.local_width or m.global_width:
        return Architecture(m.arch, local_width=m.local_width or 0,
                            global_width=m.global_width or 0, **common)
    params = m.params
    if params is None:
        values = math.prod(signal.shape) * signal.channels
        params = round(values / (m.compression or defaults.for_kind(signal.kind).compression))
    cap = m.max_global_width
    if cap is None and m.recipe != "paper":
        cap = defaults.MAX_GLOBAL_WIDTH
    return fit_widths(m.arch, params, grid.num_partitions, global_share=m.global_share,
                      max_global_width=cap, **common)


def lattice_geometry(grid: PartitionGrid, arch: str = "local-global", merge: str = "bias") -> dict:
    """The ``Architecture`` fields that place a lattice on ``grid`` (one cell per partition
    until ``place_lattice`` sizes it); none for models without one."""
    if base_arch(arch) != "local-global" or merge != "bias":
        return {}
    extent = np.maximum(np.asarray(grid.extent, dtype=np.float64) - 1, 1)
    origin = -1.0 - 1.0 / extent                     # position -0.5: the first box's edge
    size = 2.0 * np.asarray(grid.part_shape, dtype=np.float64) / extent
    return dict(lattice=(1,) * grid.ndim, grid_factors=grid.factors,
                cell_origin=tuple(origin.tolist()), part_size=tuple(size.tolist()))


def place_lattice(config: Config, arch: Architecture, grid: PartitionGrid,
                  samples_per_partition: int | None) -> Architecture:
    """``arch`` with its lattice sized: ``--lattice``, or ``defaults.lattice``'s rule for the
    samples each partition draws per step (None: full batch)."""
    if not arch.on_lattice:
        return arch
    cells = _per_axis(config.model.lattice, grid.ndim, "lattice")
    if cells is None:
        n = samples_per_partition or math.prod(grid.sample_shape)
        cells = default_lattice(grid.part_shape, n, arch.local_width, arch.global_width, arch.depths)
    if min(cells) < 1:
        raise ConfigError(f"lattice cells per partition must be >= 1, got {list(cells)}")
    if any(c > p for c, p in zip(cells, grid.part_shape)):  # a cell holds at least one sample
        raise ConfigError(f"--lattice {' '.join(map(str, cells))}: more cells than samples per "
                          f"partition ({' x '.join(map(str, grid.part_shape))}) on some axis")
    return dataclasses.replace(arch, lattice=cells)


def make_plan(config: Config, signal: Signal) -> Plan:
    """The plan of a training run of ``config`` on ``signal``: every partition trains."""
    grid = make_grid(config, signal)
    arch = make_arch(config, signal, grid)
    train = config.train
    if train.steps is None and "noise" in signal.meta and signal.kind == "image":  # stopping early denoises
        train = dataclasses.replace(train, steps=defaults.DENOISING_STEPS)
    plan = steps_plan(train, signal.kind, grid, arch, math.prod(signal.shape),
                      grid.num_partitions)
    return dataclasses.replace(plan, arch=place_lattice(config, arch, grid, plan.samples_per_partition))


def steps_plan(t: StepsConfig, kind: str, grid: PartitionGrid, arch: Architecture, values: int,
               parts: int, partitions: Sequence[int] | None = None) -> Plan:
    """Steps, learning rates and samples per partition of ``t``, or the ``kind``'s defaults: a
    sample fraction draws ``fraction * values / parts`` positions from each partition."""
    d = defaults.for_kind(kind)
    steps = t.steps if t.steps is not None else d.steps
    lr = t.lr if t.lr is not None else d.lr
    asked_global = t.global_lr if isinstance(t, TrainConfig) else None  # extend freezes it
    global_lr = asked_global if asked_global is not None else d.global_lr
    n = t.samples_per_partition
    fraction = t.sample_fraction if t.sample_fraction is not None else d.sample_fraction
    if n is None and fraction is not None:
        n = max(1, round(fraction * values / parts))
    schedule = t.schedule if t.schedule is not None else d.schedule
    return Plan(grid, arch, steps, lr, global_lr, n, schedule, t.lr_final,
                None if partitions is None else tuple(partitions))
