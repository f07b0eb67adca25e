"""Signals: an array of shape [*dims, channels] plus what it is and how its values normalise.

The array may be anything sliceable with numpy semantics: an in-memory ``np.ndarray`` or a
Zarr array (``distlg.store`` opens those). Values map linearly from ``value_range`` to [-1, 1]
(images and video: (x - 0.5) / 0.5 on [0, 1]; audio: divided by its largest magnitude).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import DistlgError

KINDS = ("image", "video", "audio", "volume")
AXES = {"image": ("y", "x"), "video": ("t", "y", "x"), "audio": ("t",), "volume": ("z", "y", "x")}


class SignalError(DistlgError):
    """A signal that cannot be used as given."""


@dataclass
class Signal:
    """A sampled signal with its channels last."""

    data: Any
    """Array-like [*dims, channels] (np.ndarray or zarr.Array)."""
    kind: str
    """'image', 'video', 'audio' or 'volume'."""
    value_range: tuple[float, float]
    """Raw values that map to -1 and +1."""
    meta: dict = field(default_factory=dict)
    """Free-form facts: fps, sample_rate, source name and size."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SignalError(f"unknown signal kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if len(self.data.shape) != len(AXES[self.kind]) + 1:
            raise SignalError(f"a {self.kind} array has shape [{', '.join(AXES[self.kind])}, "
                              f"channels]; got {tuple(self.data.shape)}")
        lo, hi = (float(v) for v in self.value_range)
        if not hi > lo:
            raise SignalError(f"value range must be increasing, got {self.value_range}")
        self.value_range = (lo, hi)

    @classmethod
    def from_array(cls, array: np.ndarray, kind: str, value_range=None, **meta) -> "Signal":
        """Wrap an in-memory array; the channel axis is added if missing."""
        array = np.asarray(array)
        if array.ndim == len(AXES.get(kind, ())):
            array = array[..., None]
        return cls(array, kind, value_range or default_range(array, kind), meta)

    @property
    def shape(self) -> tuple[int, ...]:
        """Extent of the signal's domain (without the channel axis)."""
        return tuple(int(d) for d in self.data.shape[:-1])

    @property
    def channels(self) -> int:
        return int(self.data.shape[-1])

    @property
    def axes(self) -> tuple[str, ...]:
        return AXES[self.kind]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.data.shape)) * np.dtype(self.data.dtype).itemsize

    @property
    def coord_scale(self) -> tuple[float, ...]:
        """Input scaling of the coordinates: audio spans [-100, 100] as in the paper's code."""
        return (100.0,) if self.kind == "audio" else (1.0,) * len(self.shape)

    @property
    def psnr_peak(self) -> float:
        """Peak of the normalised values for PSNR: images, video and volumes are scored on
        [0, 1] (a range of 2 in [-1, 1]); audio on [-1, 1] with peak 1, as in the paper."""
        return 1.0 if self.kind == "audio" else 2.0

    def read(self, box) -> np.ndarray:
        """Raw values of a box ``((start, stop), ...)`` inside the signal."""
        return np.asarray(self.data[tuple(slice(a, b) for a, b in box)])

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        lo, hi = self.value_range
        return ((np.asarray(raw, dtype=np.float32) - lo) * (2.0 / (hi - lo)) - 1.0).astype(np.float32)

    def denormalise(self, x: np.ndarray, dtype=None) -> np.ndarray:
        """Map [-1, 1] values back to raw units, clipped to the value range, in ``dtype``."""
        lo, hi = self.value_range
        raw = (np.clip(x, -1.0, 1.0) + 1.0) * ((hi - lo) / 2.0) + lo
        dtype = np.dtype(dtype or self.data.dtype)
        if dtype.kind in "uib":  # integers and bool round to the nearest value
            raw = np.rint(raw)
        return raw.astype(dtype)


def default_range(array: np.ndarray, kind: str) -> tuple[float, float]:
    """Value range of an array from its dtype (integers), or its values (floats)."""
    dtype = np.dtype(array.dtype)
    if kind == "audio":
        peak = float(np.max(np.abs(array))) if array.size else 1.0
        return (-peak, peak) if peak > 0 else (-1.0, 1.0)
    if dtype == np.bool_:
        return (0.0, 1.0)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return (float(info.min), float(info.max))
    if kind in ("image", "video") and array.size and array.min() >= 0 and array.max() <= 1:
        return (0.0, 1.0)
    lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 1.0)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)


BUILTIN_IMAGES = ("astronaut", "camera", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry",
                  "retina", "brick", "grass", "gravel", "text", "moon", "page", "horse")


def builtin(name: str) -> Signal:
    """A signal that ships with the installed packages: scikit-image's photographs.

    ``NAME`` or ``NAME@HxW``, resized with Pillow's anti-aliased bilinear filter (what the
    paper's code does through torchvision) and kept as 8-bit values.
    """
    import skimage.data
    from PIL import Image

    base, _, size = name.partition("@")
    if base not in BUILTIN_IMAGES:
        raise SignalError(f"unknown built-in signal {base!r}; choose one of {', '.join(BUILTIN_IMAGES)}")
    image = np.asarray(getattr(skimage.data, base)())
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    if size:
        try:
            h, w = (int(v) for v in size.lower().split("x"))
        except ValueError:
            raise SignalError(f"built-in size must look like 256x256, got {size!r}") from None
        if h < 1 or w < 1:
            raise SignalError(f"built-in size must be positive, got {size!r}")
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
    return Signal.from_array(image, "image", source=f"builtin:{name}")


def open_signal(spec: str) -> Signal:
    """``builtin:NAME[@HxW]`` or the path of a Zarr store written by ``distlg ingest``."""
    if spec.startswith("builtin:"):
        return builtin(spec[len("builtin:"):])
    from .store import open_store

    return open_store(spec)
