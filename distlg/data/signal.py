"""Signals: an array of shape [*dims, channels], and ``SignalInfo``, what it is without it.

``SignalInfo`` is the one description of a signal everywhere: kind, shape, axes, channels,
dtype and value range, how values normalise, and the facts its store records as typed fields
(fps, sample rate, source, the downstream task's downsampling, noise or sinogram, the grid it
was chunked for, where it was read from); a store's ``meta`` attribute and a manifest's hold
the same facts as plain JSON (``SignalInfo.meta`` / ``SignalInfo.facts``). A ``Signal`` is an
info plus its samples; a model directory's manifest stores an info (``to_dict``) and gives it
back (``from_dict``), so a render maps its values to the signal's units without the signal.

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

from ..defaults import KINDS
from ..errors import DistlgError

AXES = {"image": ("y", "x"), "video": ("t", "y", "x"), "audio": ("t",), "volume": ("z", "y", "x")}


class SignalError(DistlgError):
    """A signal that cannot be used as given."""


class StoreError(DistlgError):
    """A store that is missing, unreachable, incomplete or not a distlg signal store
    (``distlg.data.store`` and ``distlg.data.remote`` raise it)."""


@dataclass(frozen=True)
class Measurement:
    """What a CT store holds beside its image (``distlg.data.degrade``): a parallel-beam
    sinogram, the measurements training learns the image from."""

    operator: str
    """The measurement: "radon" (parallel-beam projections)."""
    array: str
    """Name of the sinogram's array inside the store."""
    angles: tuple[float, ...]
    """Projection angles in degrees, one per sinogram column."""
    shape: tuple[int, ...] = ()
    """The sinogram's shape [detectors, angles]."""
    reference: bool = True
    """Whether the store's image is the truth (--ct-angles) or only the measured sinogram's
    back-projection (--sinogram), in which case training scores the projections."""

    def to_dict(self) -> dict:
        return {"operator": self.operator, "array": self.array, "angles": list(self.angles),
                "shape": list(self.shape), "reference": self.reference}

    @classmethod
    def from_dict(cls, d: dict) -> "Measurement":
        return cls(str(d.get("operator", "?")), str(d.get("array", "")),
                   tuple(float(a) for a in d.get("angles", ())),
                   tuple(int(n) for n in d.get("shape", ())), bool(d.get("reference", True)))


_FACTS = {"fps": float, "sample_rate": float, "source": str, "source_bytes": int,
          "downsample": int, "original_shape": tuple, "noise": str, "noise_seed": int,
          "voxel_size": tuple, "voxel_unit": str}
"""The typed facts a store's ``meta`` attribute holds (key = field name), and their types."""


@dataclass(frozen=True)
class SignalInfo:
    """What a signal is: its kind, geometry, sample type and value range, without samples, and
    the facts its store records (rates, source, the downstream task's degradation, where it
    was read from). Two infos are equal when kind, geometry, type and range are."""

    kind: str
    """'image', 'video', 'audio' or 'volume'."""
    shape: tuple[int, ...]
    """Samples per axis, without the channel axis."""
    channels: int
    dtype: np.dtype
    """Sample type of the source (what rendered values are converted back to)."""
    value_range: tuple[float, float]
    """Raw values that map to -1 and +1."""
    fps: float | None = field(default=None, compare=False)
    """Frames per second of a video."""
    sample_rate: float | None = field(default=None, compare=False)
    """Samples per second of audio."""
    source: str | None = field(default=None, compare=False)
    """Name of the source the store was ingested from (a file name, or builtin:NAME)."""
    source_bytes: int | None = field(default=None, compare=False)
    """Size of that source."""
    downsample: int = field(default=1, compare=False)
    """Each sample is the mean of a block of this many samples per axis of the original
    (ingest --downsample: super-resolution); 1 for plain samples."""
    original_shape: tuple[int, ...] | None = field(default=None, compare=False)
    """The shape before --downsample."""
    noise: str | None = field(default=None, compare=False)
    """The noise ingest --noise added, KIND:LEVEL (denoising); None for clean samples."""
    noise_seed: int | None = field(default=None, compare=False)
    voxel_size: tuple[float, ...] | None = field(default=None, compare=False)
    """Physical size of one sample along each space axis (ingest --voxel-size), in
    ``voxel_unit``; None where none was given."""
    voxel_unit: str | None = field(default=None, compare=False)
    measurement: Measurement | None = field(default=None, compare=False)
    """A CT store's sinogram (ingest --ct-angles, --sinogram); None for other stores."""
    ingest_factors: tuple[int, ...] | None = field(default=None, compare=False)
    """Partitions per axis of the grid the store was chunked for (its ``chunking.factors``):
    the grid training takes when it is given none."""
    store: str | None = field(default=None, compare=False)
    """Where the signal was read from (a path or URL); None for one made in memory."""
    fingerprint: str | None = field(default=None, compare=False)
    """A digest of what ingest recorded of the source: tells two stores of one shape apart."""
    extra: dict = field(default_factory=dict, compare=False)
    """Other facts of the store's ``meta`` attribute, kept as they are (e.g. anti_aliasing)."""

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
        for name in ("original_shape", "ingest_factors"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        if self.voxel_size is not None:
            object.__setattr__(self, "voxel_size", tuple(float(v) for v in self.voxel_size))

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

    @property
    def rate(self) -> float | None:
        """Samples per second along the first axis: a video's fps, audio's sample rate."""
        return self.fps if self.kind == "video" else self.sample_rate

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
        return dataclasses.replace(self, shape=tuple(shape), extra=dict(self.extra))

    def meta(self) -> dict:
        """The facts as a store's (and a manifest's) ``meta`` attribute holds them: plain JSON
        values under the field names (storage/README.md)."""
        out = {name: getattr(self, name) for name in _FACTS if getattr(self, name) is not None}
        if self.downsample == 1:
            out.pop("downsample")
        for name in ("original_shape", "voxel_size"):
            if getattr(self, name) is not None:
                out[name] = list(getattr(self, name))
        if self.measurement is not None:
            out["measurement"] = self.measurement.to_dict()
        for name in ("store", "fingerprint"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        return {**self.extra, **out}

    @staticmethod
    def facts(meta: dict) -> dict:
        """``SignalInfo`` keywords of the facts in a ``meta`` attribute (unknown keys go to
        ``extra``, nothing is lost)."""
        meta, out = dict(meta), {}
        for name, kind in _FACTS.items():
            if meta.get(name) is not None:
                out[name] = kind(meta.pop(name))
        if meta.get("measurement"):
            out["measurement"] = Measurement.from_dict(meta.pop("measurement"))
        for name in ("store", "fingerprint"):
            if meta.get(name) is not None:
                out[name] = str(meta.pop(name))
        return {**out, "extra": meta}

    def to_dict(self) -> dict:
        """The manifest's ``signal`` section (storage/README.md); plain JSON values only."""
        return {"kind": self.kind, "shape": list(self.shape), "axes": list(self.axes),
                "channels": self.channels, "dtype": self.dtype.name,
                "value_range": list(self.value_range),
                "meta": {k: v for k, v in self.meta().items() if _plain(v)}}

    @classmethod
    def from_dict(cls, d: dict) -> "SignalInfo":
        """Read a manifest's ``signal`` section (``axes`` follow from the kind)."""
        return cls(d["kind"], tuple(d["shape"]), int(d["channels"]), np.dtype(d["dtype"]),
                   tuple(d["value_range"]), **cls.facts(d.get("meta", {})))


class Signal:
    """A sampled signal with its channels last; ``info`` describes it (``facts``: the
    ``SignalInfo`` fields beyond the array's own: fps, source, store, ...)."""

    def __init__(self, data: Any, kind: str, value_range: tuple[float, float], **facts: Any):
        self.data = data
        """Array-like [*dims, channels] (np.ndarray or zarr.Array)."""
        if kind not in KINDS:
            raise SignalError(f"unknown signal kind {kind!r}; choose one of {', '.join(KINDS)}")
        if len(data.shape) != len(AXES[kind]) + 1:
            raise SignalError(f"a {kind} array has shape [{', '.join(AXES[kind])}, "
                              f"channels]; got {tuple(data.shape)}")
        self.info = SignalInfo(kind, tuple(data.shape[:-1]), int(data.shape[-1]),
                               np.dtype(data.dtype), value_range, **facts)

    @classmethod
    def from_array(cls, array: np.ndarray, kind: str, value_range=None, **facts) -> "Signal":
        """Wrap an in-memory array; the channel axis is added if missing."""
        array = np.asarray(array)
        if array.ndim == len(AXES.get(kind, ())):
            array = array[..., None]
        return cls(array, kind, value_range or default_range(array, kind), **facts)

    @property
    def kind(self) -> str:
        return self.info.kind

    @property
    def value_range(self) -> tuple[float, float]:
        """Raw values that map to -1 and +1."""
        return self.info.value_range

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
