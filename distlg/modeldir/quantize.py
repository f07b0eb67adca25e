"""Quantized weights: float16, or int8 codes with scales, and what a model directory records.

``distlg export --quantize fp16|int8`` stores the weights of a model directory (format 2) in
fewer bytes. The rule a reader applies, per tensor of the flat layout (``base.Layout``):

- **float16**: every value rounded to the nearest float16 (relative error <= 2^-11 in float16's
  normal range); the value is the float16 itself.
- **int8**: ``value = scale * code``, with one scale per tensor (``per-tensor``, the same for
  every partition) or per tensor and partition (``per-partition``). ``scale`` is the tensor's
  largest magnitude over the largest code, so nothing is clipped and every value is within
  ``scale / 2`` of the original. Most tensors take one int8 code a value (codes -127..127).
  Tensors that 8 bits cannot hold within what a SIREN tolerates take two codes a value
  (``planes`` 2): every bias and stored constant, and the weights that enter the first sine
  layer (``*.0.weight``: the coordinates' layer and the merge into it). A sine layer computes
  ``sin(w0 (x W + b))`` with w0 = 30, so an error in a bias or a first-layer weight moves the
  sine's argument 30 times as far, without the averaging over many inputs that the hidden
  layers' products have: measured on astronaut (benchmarks/rate_distortion.py), 8-bit first
  layers and biases alone cost 3-5 dB, 8-bit hidden matrices 0.1 dB. Such a tensor's ``n``
  values are ``n`` high codes followed by ``n`` low codes, ``code = 256 * high + low``
  (-32640..32639), so the array stays int8 and one chunk per partition.

Entropy coding: the shards of ``local/`` and ``global/`` are zstd-compressed whole, after
Zarr's sharding codec (``codecs: [sharding_indexed, zstd]``). A partition stays one chunk, so
crop still drops chunks; what changes is that a shard is read whole (no byte ranges). Compressing
each chunk instead gains nothing at these sizes (~100-700 codes a chunk: a zstd frame's header
and its tables cost what the entropy saves; measured 0-2 %), while a whole shard's codes gain
5-9 % and its index (16 bytes a partition, regular offsets) almost all of its size. Byte shuffle
gained nothing over plain zstd on float16 or int8 (measured), so it is not used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .base import Layout
from .manifest import ModelDirError

QUANTIZE = ("fp16", "int8")
"""What ``--quantize`` accepts."""
SCALES = ("per-tensor", "per-partition")
"""Where int8's scales vary: per tensor (one for every partition), or per tensor and partition."""
DTYPES = {"fp16": "float16", "int8": "int8"}
ZSTD_LEVEL = 9
"""zstd's level for quantized shards: levels 3-19 differ by < 1 % in size on trained weights,
level 19 compresses 15x slower (measured)."""
NARROW, WIDE = 127, 32639
"""The largest code of a one-plane (int8) and a two-plane (256 * high + low) tensor."""
SCALES_ARRAY = "local_scales"
"""The per-partition scales: [*grid factors, tensors] float32, one chunk per shard."""
RULE = ("value = scale * code; a tensor of 2 planes stores its n values as n high codes then "
        "n low codes, code = 256 * high + low")


class QuantizeError(ModelDirError):
    """A quantization asked for that distlg does not write, or a weight it cannot hold."""


def check_options(quantize: str | None, scale: str | None) -> None:
    """Refuse an unknown ``--quantize``/``--scale``, or a scale without int8 (one line)."""
    if quantize is not None and quantize not in QUANTIZE:
        raise QuantizeError(f"--quantize must be one of {', '.join(QUANTIZE)}, got {quantize!r}")
    if scale is not None and scale not in SCALES:
        raise QuantizeError(f"--scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if scale is not None and quantize != "int8":
        raise QuantizeError("--scale applies to --quantize int8 only")


def planes_of(name: str, shape: Sequence[int], constants: Sequence[str] = ()) -> int:
    """Codes a value of tensor ``name`` takes in int8: 2 for biases, constants and the weights
    into the first sine layer (``*.0.weight``), else 1 (see the module docstring)."""
    parts = name.split(".")
    first = len(parts) == 3 and parts[1] == "0"
    return 2 if len(shape) < 2 or name in constants or first else 1


@dataclass(frozen=True)
class Codes:
    """How a flat float32 vector (``layout``) is stored: float16 values, or int8 codes of one or
    two planes per tensor (``planes``, in the layout's order)."""

    layout: Layout
    dtype: str
    planes: tuple[int, ...]

    @classmethod
    def make(cls, layout: Layout, dtype: str, constants: Sequence[str] = ()) -> "Codes":
        planes = tuple(planes_of(n, s, constants) if dtype == "int8" else 1
                       for n, s in layout.shapes.items())
        return cls(layout, dtype, planes)

    @property
    def segments(self) -> list[tuple[int, int, int, int]]:
        """(start, stop) in the float layout, (code start, planes) of each tensor."""
        out, code = [], 0
        for (name, start), planes in zip(self.layout.offsets.items(), self.planes):
            stop = start + math.prod(self.layout.shapes[name])
            out.append((start, stop, code, planes))
            code += planes * (stop - start)
        return out

    @property
    def width(self) -> int:
        """Codes per row."""
        return sum(p * (b - a) for (a, b, _, p) in self.segments)

    @property
    def tensors(self) -> int:
        return len(self.planes)

    def peaks(self, values: np.ndarray) -> np.ndarray:
        """float32 [n, tensors]: each tensor's largest magnitude in each row of ``values``."""
        out = np.zeros((len(values), self.tensors), dtype=np.float32)
        for t, (a, b, _, _) in enumerate(self.segments):
            if b > a:
                out[:, t] = np.abs(values[:, a:b]).max(axis=1)
        return out

    def to_scales(self, peaks: np.ndarray) -> np.ndarray:
        """int8 scales [n, tensors] from ``peaks``: the peak over the tensor's largest code
        (1 where a tensor is all zeros)."""
        top = np.asarray([WIDE if p == 2 else NARROW for p in self.planes], dtype=np.float32)
        scales = np.asarray(peaks, dtype=np.float32) / top
        return np.where(scales > 0, scales, np.float32(1)).astype(np.float32)

    def scales(self, values: np.ndarray) -> np.ndarray:
        """int8: float32 [n, tensors], each tensor's largest magnitude per row over its largest
        code (1 where a tensor is all zeros)."""
        return self.to_scales(self.peaks(values))

    def encode(self, values: np.ndarray, scales: np.ndarray | None = None,
               clip: bool = False) -> np.ndarray:
        """Codes [n, width] (float16 or int8) of float32 ``values`` [n, P]; int8 takes
        ``scales`` [n, tensors] (or [tensors]). A value beyond float16's range, or beyond a
        scale's unless ``clip`` (then it takes the largest code), is a ``QuantizeError``."""
        values = np.asarray(values, dtype=np.float32)
        if self.dtype == "float16":
            if not np.isfinite(values).all() or (np.abs(values) > np.finfo(np.float16).max).any():
                raise QuantizeError("a weight lies beyond float16's range (|w| > 65504) or is not "
                                    "finite; export it unquantized or as int8")
            return values.astype(np.float16)
        scales = np.broadcast_to(np.asarray(scales, dtype=np.float32), (len(values), self.tensors))
        out = np.empty((len(values), self.width), dtype=np.int8)
        for t, (a, b, c, planes) in enumerate(self.segments):
            q = np.rint(values[:, a:b] / scales[:, t:t + 1])
            top = WIDE if planes == 2 else NARROW
            if not np.isfinite(q).all() or (not clip and (np.abs(q) > top + 1).any()):
                raise QuantizeError("a weight lies beyond its int8 scale (a partition added to a "
                                    "per-tensor model outgrew the stored scales) or is not finite")
            q = np.clip(q, -top - (planes == 2), top).astype(np.int32)
            if planes == 1:
                out[:, c:c + b - a] = q
            else:
                high = (q + 128) >> 8
                out[:, c:c + b - a] = high
                out[:, c + b - a:c + 2 * (b - a)] = q - 256 * high
        return out

    def decode(self, codes: np.ndarray, scales: np.ndarray | None = None) -> np.ndarray:
        """float32 [n, P] from codes [n, width] (and int8's ``scales`` [n, tensors] or
        [tensors]): the rule a Zarr reader applies (``RULE``)."""
        if self.dtype == "float16":
            return np.asarray(codes).astype(np.float32)
        scales = np.broadcast_to(np.asarray(scales, dtype=np.float32), (len(codes), self.tensors))
        out = np.empty((len(codes), self.layout.width), dtype=np.float32)
        for t, (a, b, c, planes) in enumerate(self.segments):
            n = b - a
            q = codes[:, c:c + n].astype(np.float32)
            if planes == 2:
                q = q * np.float32(256) + codes[:, c + n:c + 2 * n].astype(np.float32)
            out[:, a:b] = q * scales[:, t:t + 1]
        return out

    def to_list(self) -> list:
        return [[name, list(shape), planes]
                for (name, shape), planes in zip(self.layout.shapes.items(), self.planes)]


@dataclass(frozen=True)
class Quantization:
    """What a quantized model directory records (its manifest's ``quantization`` section)."""

    dtype: str
    """float16 or int8."""
    scale: str | None = None
    """int8: per-tensor or per-partition."""
    local_scales: tuple[float, ...] | None = None
    """int8 per-tensor: each local tensor's scale."""
    global_scales: tuple[float, ...] | None = None
    """int8: each global tensor's scale (the global tensors are one row: per tensor)."""
    level: int = ZSTD_LEVEL

    @classmethod
    def asked(cls, quantize: str, scale: str | None = None) -> "Quantization":
        """The scheme ``--quantize``/``--scale`` ask for (scales still to be measured)."""
        check_options(quantize, scale)
        return cls(DTYPES[quantize], (scale or "per-tensor") if quantize == "int8" else None)

    @property
    def name(self) -> str:
        """``fp16``, ``int8 per-tensor``, ``int8 per-partition``."""
        return "fp16" if self.dtype == "float16" else f"int8 {self.scale}"

    @property
    def per_partition(self) -> bool:
        return self.scale == "per-partition"

    @property
    def compressor(self):
        """The bytes-to-bytes codec applied to each whole shard (and to ``global/``)."""
        import numcodecs

        return numcodecs.Zstd(level=self.level)

    def codes(self, layout: Layout, constants: Sequence[str] = ()) -> Codes:
        return Codes.make(layout, self.dtype, constants)

    def header(self) -> dict:
        """What every quantized array shares: dtype, scale, the rule, the compressor."""
        out: dict = {"dtype": self.dtype, "rule": RULE if self.dtype == "int8" else
                     "value = the float16 value",
                     "compressor": {"id": "zstd", "level": self.level,
                                    "applies_to": "each shard of local/, and global/, whole"}}
        if self.dtype == "int8":
            out["scale"] = self.scale
        return out

    def section(self, local: Codes | None, glob: Codes) -> dict:
        """The manifest's ``quantization`` section."""
        out = self.header()
        if local is not None:
            out["local"] = self.part(local, local=True)
        out["global"] = self.part(glob, local=False)
        return out

    def part(self, codes: Codes, local: bool) -> dict:
        """The codes of ``local/`` or ``global/`` and their scales (a list, or the array's name)."""
        part: dict = {"width": codes.width, "codes": codes.to_list()}
        if self.dtype == "int8":
            scales = self.local_scales if local else self.global_scales
            part["scales"] = SCALES_ARRAY if local and self.per_partition else \
                [float(s) for s in scales]
        return part

    @classmethod
    def parse(cls, doc, local: Layout, glob: Layout, constants: Sequence[str], where: str
              ) -> "Quantization | None":
        """The section ``doc`` (None: not quantized), checked against the layouts the
        architecture implies."""
        if doc is None:
            return None
        try:
            dtype, scale = doc["dtype"], doc.get("scale")
            if dtype not in DTYPES.values() or (dtype == "int8") != (scale in SCALES):
                raise ValueError(f"dtype {dtype!r}, scale {scale!r}")
            level = int(doc["compressor"]["level"])
            if doc["compressor"]["id"] != "zstd":
                raise ValueError(f"compressor {doc['compressor']['id']!r}")
            q = cls(dtype, scale, level=level)
            scales = {}
            for name, layout in (("local", local), ("global", glob)):
                if name == "local" and not layout.width:
                    continue
                codes = q.codes(layout, constants)
                part = doc[name]
                if part["codes"] != codes.to_list() or part["width"] != codes.width:
                    raise ValueError(f"{name} codes differ from what the architecture implies")
                scales[name] = _scales(part.get("scales"), codes, dtype, name == "local" and q.per_partition)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelDirError(f"{where}: the quantization section is malformed ({exc})") from None
        return cls(dtype, scale, scales.get("local"), scales.get("global"), level)


def _scales(value, codes: Codes, dtype: str, per_partition: bool) -> tuple[float, ...] | None:
    """Per-tensor scales from a section (positive finite numbers, one per tensor)."""
    if dtype != "int8" or per_partition:
        if per_partition and value != SCALES_ARRAY:
            raise ValueError(f"per-partition scales live in {SCALES_ARRAY}/, not {value!r}")
        return None
    if not isinstance(value, list) or len(value) != codes.tensors or not all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and math.isfinite(s) and s > 0
            for s in value):
        raise ValueError("scales must be one positive finite number per tensor")
    return tuple(float(s) for s in value)


def bound(codes: Codes, values: np.ndarray, scales: np.ndarray | None) -> np.ndarray:
    """The stated bound of |decoded - values| [n, P]: float16's half step (2^-11 |v|, and 2^-25
    below its normal range), or half a scale for int8; both plus float32 rounding."""
    values = np.abs(np.asarray(values, dtype=np.float32))
    if codes.dtype == "float16":
        return values * np.float32(2.0 ** -11) + np.float32(2.0 ** -25)
    scales = np.broadcast_to(np.asarray(scales, dtype=np.float32), (len(values), codes.tensors))
    out = np.empty_like(values)
    for t, (a, b, _, _) in enumerate(codes.segments):
        out[:, a:b] = scales[:, t:t + 1] * np.float32(0.5) + values[:, a:b] * np.float32(2.0 ** -22)
    return out
