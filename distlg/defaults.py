"""Every choice and every default of a setting, in one place.

- The enumerations, each a ``Literal`` type with its runtime tuple derived from it (``Arch`` and
  ``ARCHS``, ...): the config's fields, ``Architecture``'s checks and the command line's
  choices all read them from here.
- The model's constants (w0, hidden layers, global share) and the memory budget.
- ``BY_KIND``: what depends on the signal's kind (steps, rates, schedule, budget, sampling,
  partition size, halo). They follow the paper (images train full-batch with 32x32
  partitions; video draws 2 % of its positions per step with (1, 2, 2) halos; audio trains
  full-batch for 1000 steps), except for the learning rates and schedules of video, audio and
  volumes, which a sweep chose for distlg's recipe (benchmarks/sweep.py, results/sweep_*.md):
  at the paper's 1e-4 (constant) the recipe ended 3 dB (bach), 4 dB (carphone) and 11 dB (the
  phantom) below the best setting, 1e-3 with cosine decay (3e-3 on volumes: 1e-3 left the
  shapes, blobs and phantom volumes 1.0, 0.5 and 2.3 dB below it; on audio 3e-3 falls
  apart), at the benchmark's step counts.
- ``BY_RECIPE``: what depends on the recipe (merge, global width cap).
- The partition-grid rule (``grid_factors``) that ingest chunks for and the trainer plans with.

``--help`` writes the tables' values from here (``describe``); ``distlg.config`` resolves a
run's settings against them once (``Config.resolved``). Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence, get_args

from .geometry import auto_factors

# -- enumerations: the Literal is the type, the tuple its runtime form ---------------------------
Kind = Literal["image", "video", "audio", "volume"]
Arch = Literal["local-global", "per-partition", "siren",
               "local-global-incode", "per-partition-incode", "incode"]
Merge = Literal["shared", "per-depth", "add", "bias"]
Recipe = Literal["distlg", "paper"]
Precision = Literal["fp32", "tf32", "bf16"]
Kernel = Literal["torch", "triton"]
Schedule = Literal["constant", "cosine"]
Scoring = Literal["auto", "full", "sample"]
Device = Literal["cpu", "cuda"]

KINDS: tuple[str, ...] = get_args(Kind)
ARCHS: tuple[str, ...] = get_args(Arch)
SIREN_ARCHS = ARCHS[:3]
INCODE_ARCHS = ARCHS[3:]
"""Each SIREN family member's INCODE counterpart, in the same order."""
MERGES: tuple[str, ...] = get_args(Merge)
RECIPES: tuple[str, ...] = get_args(Recipe)
PRECISIONS: tuple[str, ...] = get_args(Precision)
KERNELS: tuple[str, ...] = get_args(Kernel)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
SCORINGS: tuple[str, ...] = get_args(Scoring)
DEVICES: tuple[str, ...] = get_args(Device)



def base_arch(arch: str) -> str:
    """The SIREN family member an architecture is built like (itself for SIREN ones)."""
    return SIREN_ARCHS[INCODE_ARCHS.index(arch)] if arch in INCODE_ARCHS else arch


# -- the model's constants -------------------------------------------------------------------------
W0 = 30.0
"""SIREN's frequency factor: every sine layer computes sin(w0 (x W + b))."""
HIDDEN_LAYERS = 3
"""Hidden layers after the first sine layer, in each branch (the paper's)."""
GLOBAL_SHARE = 0.1
"""Share of the parameters in the replicated part (the paper's 5-15 %, 10 % by default)."""
MEMORY_BUDGET_GIB = 4.0
"""Decoded signal data a worker may hold before its sampler streams the store."""
MEMORY_BUDGET = int(MEMORY_BUDGET_GIB * 2**30)
"""The same in bytes."""


# -- per kind --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KindDefaults:
    """The defaults of one kind of signal."""

    steps: int
    """Optimisation steps."""
    lr: float
    """Adam learning rate (the best of benchmarks/sweep.py's for the kind's signals)."""
    schedule: Schedule
    """Learning-rate schedule: constant, or cosine decay to ``--lr-final`` x lr."""
    global_lr: float
    """Learning rate of Local-Global's replicated part relative to the local sub-networks. At the
    image rate (5e-4, full batch) the shared branch, whose every step moves the whole image,
    makes the PSNR oscillate by ~0.5 dB late in training; 0.3x removes that (astronaut 256x256,
    2000 steps: +1.1 / +0.7 / +0.9 dB on three seeds, benchmarks/results/paper_image.md). At
    the paper's 1e-4 for audio it slowed training (bach, 1000 steps: 33.80 vs 34.20 dB), so
    other kinds keep 1."""
    compression: float
    """Signal values per parameter: images as in the paper's 512x512 / 200 K runs; audio about
    the paper's 198 K parameters for its 7-second clip."""
    sample_fraction: float | None
    """Fraction of the positions drawn per step; None: full batch (every position)."""
    partition_size: tuple[int, ...] | None
    """Target partition size per axis; None: 1/32 of the (one) axis, the paper's audio rule."""
    halo: tuple[int, ...] | None
    """Overlap per axis (on split axes) of Local-Global and per-partition; None: no halo."""


BY_KIND: dict[str, KindDefaults] = {
    "image": KindDefaults(2000, 5e-4, "constant", 0.3, 4.0, None, (32, 32), None),
    "video": KindDefaults(1500, 1e-3, "cosine", 1.0, 64.0, 0.02, (50, 32, 32), (1, 2, 2)),
    "audio": KindDefaults(1000, 1e-3, "cosine", 1.0, 1.5, None, None, None),
    "volume": KindDefaults(1500, 3e-3, "cosine", 1.0, 64.0, 0.02, (32, 32, 32), None),
}

DENOISING_STEPS = 300
"""Steps on an image store ingested with --noise (other kinds keep their kind's steps: not
measured; on a 1 s two-tone clip at sigma 0.05, 300 steps underfit and 1000 and 3000 fit
the noise, all below the noisy input's PSNR). An INR learns the image's structure before its
noise, so stopping early is the denoiser (capacity, w0 and steps act as the prior; the budget
keeps the kind's compression). Astronaut 128x128, Gaussian sigma 0.1 (input 20.60 dB), clean
PSNR after 150 / 300 / 600 steps: 22.60 / 25.50 / 25.30 dB at 4 values per weight, 14.94 /
19.00 / - at 16 (too few weights). Partitions keep their size whatever the image's, so the
step count carries over to larger images."""


# -- per recipe ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RecipeDefaults:
    """How a recipe builds Local-Global."""

    merge: str
    """How local and global features meet (``Merge``)."""
    max_global_width: int | None
    """Largest global width the budget may pick (None: no cap). distlg caps it at 64: the shared
    part's capacity does not grow with the budget (the rest goes to the local sub-networks), and
    on its lattice its cost per sample does not depend on it at all."""


BY_RECIPE: dict[str, RecipeDefaults] = {
    "distlg": RecipeDefaults("bias", 64),
    "paper": RecipeDefaults("shared", None),
}
PAPER = BY_RECIPE["paper"]
"""The paper's formulation: what an ``Architecture`` built by hand gets unless told."""


def for_kind(kind: str) -> KindDefaults:
    return BY_KIND[kind]


# -- the partition grid ----------------------------------------------------------------------------
def partition_size(kind: str, shape: Sequence[int]) -> tuple[int, ...]:
    """Default partition size of a ``kind`` signal of ``shape``."""
    size = BY_KIND[kind].partition_size
    return size if size is not None else (max(1, int(shape[0]) // 32),)


def grid_factors(kind: str, shape: Sequence[int], factors: Sequence[int] | None = None,
                 size: Sequence[int] | None = None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The partition grid's (factors, target partition size) of a ``kind`` signal of ``shape``:
    ``factors`` as given, else partitions of about ``size`` samples per axis (default: the
    kind's). Ingest chunks a store along this grid and the trainer plans with it (one rule)."""
    size = tuple(int(s) for s in size) if size else partition_size(kind, shape)
    if factors:
        return tuple(int(f) for f in factors), size
    return auto_factors(shape, size, max_factor=max(shape)), size


def overlaps(kind: str, factors: Sequence[int], arch: str) -> tuple[int, ...]:
    """The default halo: the kind's on every split axis, none for one SIREN."""
    halo = BY_KIND[kind].halo
    if halo is None or arch in ("siren", "incode"):
        return (0,) * len(factors)
    return tuple(h if c > 1 else 0 for h, c in zip(halo, factors))  # none on unsplit axes


# -- --help ----------------------------------------------------------------------------------------
_NONE_TEXT = {"sample_fraction": "full batch", "partition_size": "1/32 of the clip", "halo": "0",
              "max_global_width": "none"}
"""How --help writes a default of None."""


def _text(name: str, value) -> str:
    if value is None:
        return _NONE_TEXT[name]
    if isinstance(value, str):
        return value
    return " ".join(f"{v:g}" for v in value) if isinstance(value, tuple) else f"{value:g}"


def describe(name: str) -> str:
    """``Default by kind: image 2000, video 1500, ...`` (or ``by recipe``) for the --help of
    setting ``name``, from ``BY_KIND`` or ``BY_RECIPE``."""
    by_kind = name in KindDefaults.__dataclass_fields__
    table, what = (BY_KIND, "kind") if by_kind else (BY_RECIPE, "recipe")
    text = f"Default by {what}: " + ", ".join(f"{key} {_text(name, getattr(d, name))}"
                                              for key, d in table.items()) + "."
    if name == "steps":
        text += f" An image store ingested with --noise: {DENOISING_STEPS} (stopping early denoises)."
    return text
