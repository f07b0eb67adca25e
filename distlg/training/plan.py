"""From a config and a signal to everything a run needs: the settings resolved for the signal
(``Config.resolved``: the kind's and the recipe's defaults, the grid its store records), the
grid, the architecture, the schedule and the batch.

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
from ..config import Config, ConfigError, StepsConfig, per_axis
from ..data.signal import Signal
from ..geometry import PartitionGrid
from ..nn.architecture import runs_on_lattice
from ..nn.budget import fit_widths
from ..nn.lattice import default_lattice
from ..nn.model import Architecture
from .optim import scheduled_lr


@dataclass(frozen=True)
class Plan:
    """A run, decided: the grid, the architecture, the schedule and the batch, and the settings
    they came from with every default filled in (``settings``)."""

    grid: PartitionGrid
    arch: Architecture
    steps: int
    lr: float
    global_lr: float
    """Learning rate of a Local-Global model's replicated part, as a fraction of ``lr``."""
    samples_per_partition: int | None
    """None: full batch (every position of every sampling box each step)."""
    schedule: str = "constant"
    """Learning-rate schedule (``defaults.Schedule``)."""
    lr_final: float = StepsConfig.lr_final
    """Final learning rate of the cosine schedule, as a fraction of ``lr``."""
    trained_partitions: tuple[int, ...] | None = None
    """The partitions that train (None: every partition of the grid; extend trains its new
    ones)."""
    settings: Config | None = None
    """The run's settings resolved for its signal (``Config.resolved``); None for extend."""

    @property
    def samples_per_step(self) -> int:
        """Samples of all workers in one step (what the loss is normalised by)."""
        n = self.samples_per_partition or math.prod(self.grid.sample_shape)
        trained = self.grid.num_partitions if self.trained_partitions is None \
            else len(self.trained_partitions)
        return n * trained

    def lr_at(self, step: int) -> float:
        """The (local) learning rate of ``step``."""
        return scheduled_lr(self.lr, step, self.steps, self.schedule, self.lr_final)


def make_grid(config: Config, signal: Signal) -> PartitionGrid:
    """The partition grid ``config`` asks for on ``signal`` (``PartitionConfig.resolved``)."""
    p = config.partition.resolved(signal.kind, signal.shape, config.model.arch,
                                  signal.info.ingest_factors)
    return PartitionGrid(signal.shape, p.factors, p.overlaps)


def make_arch(config: Config, signal: Signal, grid: PartitionGrid) -> Architecture:
    """Widths from the budget (or as given) of resolved settings (``place_lattice`` then sizes
    a lattice merge's lattice, which depends on the samples per step)."""
    m = config.model
    common = dict(in_dims=len(signal.shape), out_dims=signal.channels, hidden_layers=m.hidden_layers,
                  merge=m.merge, w0=m.w0, coord_scale=signal.coord_scale,
                  **lattice_geometry(grid, m.arch, m.merge))
    if m.local_width or m.global_width:
        return Architecture(m.arch, local_width=m.local_width or 0,
                            global_width=m.global_width or 0, **common)
    return fit_widths(m.arch, m.params, grid.num_partitions, global_share=m.global_share,
                      max_global_width=m.max_global_width, **common)


def lattice_geometry(grid: PartitionGrid, arch: str = "local-global",
                     merge: str = defaults.BY_RECIPE["distlg"].merge) -> dict:
    """The ``Architecture`` fields that place a lattice on ``grid`` (one cell per partition
    until ``place_lattice`` sizes it); none for models without one."""
    if not runs_on_lattice(arch, merge):
        return {}
    extent = np.maximum(np.asarray(grid.extent, dtype=np.float64) - 1, 1)
    origin = -1.0 - 1.0 / extent                     # position -0.5: the first box's edge
    size = 2.0 * np.asarray(grid.part_shape, dtype=np.float64) / extent
    return dict(lattice=(1,) * grid.ndim, grid_factors=grid.factors,
                cell_origin=tuple(origin.tolist()), part_size=tuple(size.tolist()))


def place_lattice(config: Config, arch: Architecture, grid: PartitionGrid,
                  samples_per_partition: int | None) -> Architecture:
    """``arch`` with its lattice sized: ``--lattice``, or ``default_lattice``'s rule for the
    samples each partition draws per step (None: full batch)."""
    if not arch.on_lattice:
        return arch
    cells = per_axis(config.model.lattice, grid.ndim, "lattice")
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
    settings = config.resolved(signal.info)
    p = settings.partition
    grid = PartitionGrid(signal.shape, p.factors, p.overlaps)
    arch = make_arch(settings, signal, grid)
    plan = steps_plan(settings.train, grid, arch)
    arch = place_lattice(settings, arch, grid, plan.samples_per_partition)
    return dataclasses.replace(plan, arch=arch, settings=settings)


def steps_plan(t: StepsConfig, grid: PartitionGrid, arch: Architecture,
               partitions: Sequence[int] | None = None) -> Plan:
    """Steps, learning rates and samples per partition of resolved settings ``t``
    (``StepsConfig.resolved``)."""
    if t.steps is None or t.lr is None or t.schedule is None:
        raise ConfigError("steps_plan needs resolved settings (StepsConfig.resolved)")
    return Plan(grid, arch, t.steps, t.lr, getattr(t, "global_lr", 1.0), t.samples_per_partition,
                t.schedule, t.lr_final, None if partitions is None else tuple(partitions))
