"""From a config and a signal to everything a run needs: the grid, the architecture, the batch.

Kind-dependent defaults follow the paper: images train full-batch at lr 5e-4 with 32x32
partitions (Local-Global's replicated part at 0.3x that rate, distlg's own choice); video draws
2 % of its positions per step at lr 1e-4 with (1, 2, 2) halos; audio trains full-batch at lr
1e-4 for 1000 steps on a time axis scaled to [-100, 100].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .config import Config, ConfigError
from .data.signal import Signal
from .geometry import PartitionGrid, auto_factors
from .nn.budget import fit_widths
from .nn.model import Architecture

DEFAULT_STEPS = {"image": 2000, "audio": 1000}
DEFAULT_LR = {"image": 5e-4}
DEFAULT_COMPRESSION = {"image": 4.0, "audio": 1.5, "video": 64.0, "volume": 64.0}
"""Signal values per parameter: images as in the paper's 512x512 / 200 K runs; audio about the
paper's 198 K parameters for its 7-second clip."""
DEFAULT_FRACTION = {"video": 0.02, "volume": 0.02}
DEFAULT_GLOBAL_LR = {"image": 0.3}
"""Learning rate of Local-Global's replicated part relative to the local sub-networks. At the
image rate (5e-4, full batch) the shared branch, whose every step moves the whole image, makes
the PSNR oscillate by ~0.5 dB late in training; 0.3x removes that (astronaut 256x256, 2000
steps: +1.1 / +0.7 / +0.9 dB on three seeds, benchmarks/results/paper_image.md). At the paper's 1e-4 for
audio it slowed training (bach, 1000 steps: 33.80 vs 34.20 dB), so other kinds keep 1."""


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

    @property
    def samples_per_step(self) -> int:
        n = self.samples_per_partition or math.prod(self.grid.sample_shape)
        return n * self.grid.num_partitions


def _per_axis(values, ndim: int, name: str) -> tuple[int, ...] | None:
    if values is None:
        return None
    values = list(values)
    if len(values) == 1:
        values = values * ndim
    if len(values) != ndim:
        raise ConfigError(f"{name} needs 1 or {ndim} values for a {ndim}-axis signal, got {len(values)}")
    return tuple(int(v) for v in values)


def default_partition_size(signal: Signal) -> tuple[int, ...]:
    return partition_size_for(signal.kind, signal.shape)


def partition_size_for(kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Default partition size of a ``kind`` signal of ``shape`` (also what ingest chunks for)."""
    if kind == "video":
        return (50, 32, 32)
    if kind == "audio":
        return (max(1, shape[0] // 32),)
    return (32,) * len(shape)


def default_factors(shape: tuple[int, ...], size: tuple[int, ...]) -> tuple[int, ...]:
    """Partition factors for partitions of about ``size`` samples per axis."""
    return auto_factors(shape, size, max_factor=max(shape))


def make_grid(config: Config, signal: Signal) -> PartitionGrid:
    p, ndim = config.partition, len(signal.shape)
    factors = _per_axis(p.factors, ndim, "factors")
    if config.model.arch == "siren" and factors is None:
        factors = (1,) * ndim
    if factors is None:
        size = _per_axis(p.partition_size, ndim, "partition size") or default_partition_size(signal)
        factors = default_factors(signal.shape, size)
    overlaps = _per_axis(p.overlaps, ndim, "overlaps")
    if overlaps is None:
        halo = (1, 2, 2) if signal.kind == "video" and config.model.arch != "siren" else (0,) * ndim
        overlaps = tuple(h if c > 1 else 0 for h, c in zip(halo, factors))  # none on unsplit axes
    return PartitionGrid(signal.shape, factors, overlaps)


def make_arch(config: Config, signal: Signal, grid: PartitionGrid) -> Architecture:
    m = config.model
    common = dict(in_dims=len(signal.shape), out_dims=signal.channels, hidden_layers=m.hidden_layers,
                  merge=m.merge, w0=m.w0, coord_scale=signal.coord_scale)
    if m.local_width or m.global_width:
        return Architecture(m.arch, local_width=m.local_width or 0,
                            global_width=m.global_width or 0, **common)
    params = m.params
    if params is None:
        values = math.prod(signal.shape) * signal.channels
        params = round(values / (m.compression or DEFAULT_COMPRESSION[signal.kind]))
    return fit_widths(m.arch, params, grid.num_partitions, global_share=m.global_share, **common)


def make_plan(config: Config, signal: Signal) -> Plan:
    t = config.train
    grid = make_grid(config, signal)
    arch = make_arch(config, signal, grid)
    steps = t.steps if t.steps is not None else DEFAULT_STEPS.get(signal.kind, 1500)
    lr = t.lr if t.lr is not None else DEFAULT_LR.get(signal.kind, 1e-4)
    if steps < 1:
        raise ConfigError(f"steps must be >= 1, got {steps}")
    if lr <= 0:
        raise ConfigError(f"lr must be > 0, got {lr}")
    global_lr = t.global_lr if t.global_lr is not None else DEFAULT_GLOBAL_LR.get(signal.kind, 1.0)
    if global_lr < 0:
        raise ConfigError(f"global lr must be >= 0, got {global_lr}")
    n = t.samples_per_partition
    if n is None:
        fraction = t.sample_fraction if t.sample_fraction is not None else DEFAULT_FRACTION.get(signal.kind)
        if fraction is not None:
            if not 0 < fraction <= 1:
                raise ConfigError(f"sample fraction must lie in (0, 1], got {fraction}")
            n = max(1, round(fraction * math.prod(signal.shape) / grid.num_partitions))
    elif n < 1:
        raise ConfigError(f"samples per partition must be >= 1, got {n}")
    return Plan(grid, arch, steps, lr, global_lr, n)
