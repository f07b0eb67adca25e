"""Signals: an array of shape [*dims, channels], and ``SignalInfo``, what it is without it.

``SignalInfo`` is the one description of a signal everywhere: kind, shape, axes, channels,
dtype and value range, and how values normalise. A ``Signal`` is an info plus its samples; a
model directory's manifest stores an info (``to_dict``) and gives it back (``from_dict``), so
a render maps its values to the signal's units without the signal.

The array may be anything sliceable with numpy semantics: an in-memory ``np.ndarray`` or a
Zarr array (``distlg.data.store`` opens those). Values map linearly from ``value_range`` to
[-1, 1] (images and video: (x - 0.5) / 0.5 on [0, 1]; audio: divided by its largest magnitude,
about 128 for 8-bit unsigned samples).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from ..errors import DistlgError

KINDS = ("image", "video", "audio", "volume")
AXES = {"image": ("y", "x"), "video": ("t", "y", "x"), "audio": ("t",), "volume": ("z", "y", "x")}


class SignalError(DistlgError):
    """A signal that cannot be used as given."""


class StoreError(DistlgError):
    """A store that is missing, unreachable, incomplete or not a distlg signal store
    (``distlg.data.store`` and ``distlg.data.remote`` raise it)."""


@dataclass(frozen=True)
class SignalInfo:
    """What a signal is: its kind, geometry, sample type and value range, without samples."""

    kind: str
    """'image', 'video', 'audio' or 'volume'."""
    shape: tuple[int, ...]
    """Samples per axis, without the channel axis."""
    channels: int
    dtype: np.dtype
    """Sample type of the source (what rendered values are converted back to)."""
    value_range: tuple[float, float]
    """Raw values that map to -1 and +1."""
    meta: dict = field(default_factory=dict, compare=False)
    """Free-form facts: fps, sample_rate, source name and size."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SignalError(f"unknown signal kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        shape = tuple(int(d) for d in self.shape)
        if len(shape) != len(AXES[self.kind]):
            raise SignalError(f"a {self.kind} array has shape [{', '.join(AXES[self.kind])}, "
                              f"channels]; got {shape + (self.channels,)}")
        lo, hi = (float(v) for v in self.value_range)
        if not hi > lo:
            raise SignalError(f"value range must be increasing, got {self.value_range}")
        for name, value in (("shape", shape), ("channels", int(self.channels)),
                            ("dtype", np.dtype(self.dtype)), ("value_range", (lo, hi))):
            object.__setattr__(self, name, value)

    @property
    def axes(self) -> tuple[str, ...]:
        return AXES[self.kind]

    @property
    def coord_scale(self) -> tuple[float, ...]:
        """Input scaling of the coordinates: audio spans [-100, 100] as in the paper's code."""
        return (100.0,) if self.kind == "audio" else (1.0,) * len(self.shape)

    @property
    def psnr_peak(self) -> float:
        """Peak of the normalised values for PSNR: images, video and volumes are scored on
        [0, 1] (a range of 2 in [-1, 1]); audio on [-1, 1] with peak 1, as in the paper."""
        return 1.0 if self.kind == "audio" else 2.0

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        lo, hi = self.value_range
        return ((np.asarray(raw, dtype=np.float32) - lo) * (2.0 / (hi - lo)) - 1.0).astype(np.float32)

    def denormalise(self, x: np.ndarray, dtype=None) -> np.ndarray:
        """Map [-1, 1] values back to raw units, clipped to the value range, in ``dtype``
        (default: the signal's)."""
        lo, hi = self.value_range
        raw = (np.clip(x, -1.0, 1.0) + 1.0) * ((hi - lo) / 2.0) + lo
        dtype = np.dtype(dtype or self.dtype)
        if dtype.kind in "ui":  # integers round to the nearest value the type holds
            limits = np.iinfo(dtype)
            raw = np.clip(np.rint(raw), limits.min, limits.max)
        elif dtype.kind == "b":
            raw = np.rint(raw)
        return raw.astype(dtype)

    def with_shape(self, shape: Sequence[int]) -> "SignalInfo":
        """The same signal with another extent (an extended model's)."""
        return dataclasses.replace(self, shape=tuple(shape), meta=dict(self.meta))

    def to_dict(self) -> dict:
        """The manifest's ``signal`` section (storage/README.md); plain JSON values only."""
        return {"kind": self.kind, "shape": list(self.shape), "axes": list(self.axes),
                "channels": self.channels, "dtype": self.dtype.name,
                "value_range": list(self.value_range),
                "meta": {k: v for k, v in self.meta.items() if _plain(v)}}

    @classmethod
    def from_dict(cls, d: dict) -> "SignalInfo":
        """Read a manifest's ``signal`` section (``axes`` follow from the kind)."""
        return cls(d["kind"], tuple(d["shape"]), int(d["channels"]), np.dtype(d["dtype"]),
                   tuple(d["value_range"]), dict(d.get("meta", {})))


@dataclass
class Signal:
    """A sampled signal with its channels last; ``info`` describes it."""

    data: Any
    """Array-like [*dims, channels] (np.ndarray or zarr.Array)."""
    kind: str
    """'image', 'video', 'audio' or 'volume'."""
    value_range: tuple[float, float]
    """Raw values that map to -1 and +1."""
    meta: dict = field(default_factory=dict)
    """Free-form facts: fps, sample_rate, source name and size."""
    info: SignalInfo = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SignalError(f"unknown signal kind {self.kind!r}; choose one of {', '.join(KINDS)}")
        if len(self.data.shape) != len(AXES[self.kind]) + 1:
            raise SignalError(f"a {self.kind} array has shape [{', '.join(AXES[self.kind])}, "
                              f"channels]; got {tuple(self.data.shape)}")
        self.info = SignalInfo(self.kind, tuple(self.data.shape[:-1]), int(self.data.shape[-1]),
                               np.dtype(self.data.dtype), self.value_range, self.meta)
        self.value_range = self.info.value_range

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
        return self.info.shape

    @property
    def channels(self) -> int:
        return self.info.channels

    @property
    def axes(self) -> tuple[str, ...]:
        return self.info.axes

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.data.shape)) * np.dtype(self.data.dtype).itemsize

    @property
    def coord_scale(self) -> tuple[float, ...]:
        return self.info.coord_scale

    @property
    def psnr_peak(self) -> float:
        return self.info.psnr_peak

    def read(self, box) -> np.ndarray:
        """Raw values of a box ``((start, stop), ...)`` inside the signal."""
        return np.asarray(self.data[tuple(slice(a, b) for a, b in box)])

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        return self.info.normalise(raw)

    def denormalise(self, x: np.ndarray, dtype=None) -> np.ndarray:
        return self.info.denormalise(x, dtype)


def _plain(value: Any) -> bool:
    """A meta value a manifest keeps: a string, a number, or a list of numbers (a voxel size)."""
    if isinstance(value, list):
        return all(isinstance(v, (int, float)) for v in value)
    return isinstance(value, (str, int, float))


def audio_centre(dtype) -> float:
    """The value of silence in audio samples of ``dtype``: 0, or for unsigned integers (8-bit
    WAV) the middle of the type, 128 for uint8."""
    dtype = np.dtype(dtype)
    return float(1 << (8 * dtype.itemsize - 1)) if dtype.kind == "u" else 0.0


def default_range(array: np.ndarray, kind: str) -> tuple[float, float]:
    """Value range of an array from its dtype (integers), or its values (floats); audio's is
    symmetric about silence (``audio_centre``), as far as its largest excursion."""
    dtype = np.dtype(array.dtype)
    if kind == "audio":  # silence is 0, or the middle of an unsigned type (offset binary)
        mid = audio_centre(dtype)
        peak = float(np.max(np.abs(array.astype(np.float64) - mid))) if array.size else 0.0
        return (mid - peak, mid + peak) if peak > 0 else (mid - 1.0, mid + 1.0)
    if dtype == np.bool_:
        return (0.0, 1.0)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return (float(info.min), float(info.max))
    if kind in ("image", "video") and array.size and array.min() >= 0 and array.max() <= 1:
        return (0.0, 1.0)
    lo, hi = (float(array.min()), float(array.max())) if array.size else (0.0, 1.0)
    return (lo, hi) if hi > lo else (lo, lo + 1.0)
