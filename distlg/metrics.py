"""Quality of a reconstruction: PSNR over every value, SSIM where it means something, and the
``Evaluation`` a score reports. Ground floor: numpy and scikit-image only; the trainer's
evaluators (``distlg.training.evaluation``) and a render's comparison with a signal
(``distlg.rendering.compare``) build on it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

SSIM_MAX_BYTES = 512 << 20
"""Memory SSIM may take: the reconstruction and the signal are assembled (8 bytes a value), and
scikit-image's n-dimensional SSIM of a volume holds about ten float64 copies (80 more); larger
signals are scored by PSNR alone."""


def ssim_bytes(values: int, kind: str) -> int:
    """Memory the SSIM of a ``kind`` signal of ``values`` values takes (images and video are
    scored a frame at a time)."""
    return values * (88 if kind == "volume" else 8)


def psnr(mse: float, peak: float) -> float:
    """10 log10(peak^2 / mse); peak 2 scores [-1, 1] values as [0, 1] images do."""
    return float("inf") if mse <= 0 else 10.0 * math.log10(peak * peak / mse)


def ssim(truth: np.ndarray, pred: np.ndarray, kind: str) -> float | None:
    """SSIM of values in [-1, 1] (scored on [0, 1]); per frame for video, nD for volumes.
    None for audio, where SSIM is not used."""
    from skimage.metrics import structural_similarity

    if kind == "audio":
        return None
    a, b = (truth + 1) / 2, (pred + 1) / 2
    kw = dict(data_range=1.0, channel_axis=-1)
    if min(a.shape[:-1]) < 7:
        return None
    if kind == "video":
        return float(np.mean([structural_similarity(x, y, **kw) for x, y in zip(a, b)]))
    return float(structural_similarity(a, b, **kw))


@dataclass
class Evaluation:
    mse: float
    psnr: float
    ssim: float | None = None
    reconstruction: np.ndarray | None = None
    """Normalised [-1, 1] reconstruction (only when asked for and small enough)."""
    sampled: tuple[int, int] | None = None
    """(partitions scored, partitions in all) when scored on a subset, else None."""
    psnr_interval: tuple[float, float] | None = None
    """95 % confidence interval of a sampled PSNR."""

    def describe(self) -> str:
        text = f"PSNR {self.psnr:.2f} dB"
        if self.sampled:
            lo, hi = self.psnr_interval
            text += (f" (sampled: {self.sampled[0]} of {self.sampled[1]} partitions, "
                     f"95 % CI {lo:.2f}-{hi:.2f})")
        return text + (f", SSIM {self.ssim:.4f}" if self.ssim is not None else "")
