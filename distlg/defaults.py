"""Every default that depends on the signal's kind, in one place.

The trainer (``plan``), extend, ingest's chunking and the command line's --help all read them
from here. They follow the paper (images train full-batch with 32x32 partitions; video draws
2 % of its positions per step with (1, 2, 2) halos; audio trains full-batch for 1000 steps),
except for the learning rates and schedules, which a sweep chose for distlg's recipe
(benchmarks/sweep.py, results/sweep_*.md): at the paper's 1e-4 (constant) distlg's recipe ended
3 dB (bach), 4 dB (carphone) and 11 dB (the phantom) below the best setting, 1e-3 with cosine
decay, at the benchmark's step counts. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from .geometry import auto_factors


@dataclass(frozen=True)
class KindDefaults:
    """The defaults of one kind of signal."""

    steps: int
    """Optimisation steps."""
    lr: float
    """Adam learning rate (the best of benchmarks/sweep.py's for the kind's signals)."""
    schedule: str
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


BY_KIND = {
    "image": KindDefaults(2000, 5e-4, "constant", 0.3, 4.0, None, (32, 32), None),
    "video": KindDefaults(1500, 1e-3, "cosine", 1.0, 64.0, 0.02, (50, 32, 32), (1, 2, 2)),
    "audio": KindDefaults(1000, 1e-3, "cosine", 1.0, 1.5, None, None, None),
    "volume": KindDefaults(1500, 1e-3, "cosine", 1.0, 64.0, 0.02, (32, 32, 32), None),
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

MAX_GLOBAL_WIDTH = 64
"""Global width cap of the distlg recipe (any kind): the shared part's capacity does not grow
with the budget (the rest goes to the local sub-networks), and on its lattice its cost per
sample does not depend on it at all."""


def for_kind(kind: str) -> KindDefaults:
    return BY_KIND[kind]


def partition_size(kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """Default partition size of a ``kind`` signal of ``shape`` (also what ingest chunks for)."""
    size = BY_KIND[kind].partition_size
    return size if size is not None else (max(1, shape[0] // 32),)


def factors(shape: tuple[int, ...], size: tuple[int, ...]) -> tuple[int, ...]:
    """Partition factors for partitions of about ``size`` samples per axis."""
    return auto_factors(shape, size, max_factor=max(shape))


def overlaps(kind: str, factors: tuple[int, ...], arch: str) -> tuple[int, ...]:
    """The default halo: the kind's on every split axis, none for one SIREN."""
    halo = BY_KIND[kind].halo
    if halo is None or arch in ("siren", "incode"):
        return (0,) * len(factors)
    return tuple(h if c > 1 else 0 for h, c in zip(halo, factors))  # none on unsplit axes


_NONE_TEXT = {"sample_fraction": "full batch", "partition_size": "1/32 of the clip", "halo": "0"}
"""How --help writes a default of None."""


def _text(name: str, value) -> str:
    if value is None:
        return _NONE_TEXT[name]
    if isinstance(value, str):
        return value
    return " ".join(f"{v:g}" for v in value) if isinstance(value, tuple) else f"{value:g}"


def describe(name: str) -> str:
    """``Default by kind: image 2000, video 1500, ...`` for the --help of setting ``name``."""
    text = "Default by kind: " + ", ".join(f"{kind} {_text(name, getattr(d, name))}"
                                           for kind, d in BY_KIND.items()) + "."
    if name == "steps":
        text += f" An image store ingested with --noise: {DENOISING_STEPS} (stopping early denoises)."
    return text
