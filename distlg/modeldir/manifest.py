"""What a model directory describes, parsed once and checked: ``Manifest``.

Both formats carry the same description (storage/README.md): the signal, the partition grid,
the architecture and, for checkpoints, the training state. Version 2 (shards) keeps it in the
root ``zarr.json``'s ``distlg`` attribute, version 1 in ``manifest.json``. Everything the rest
of distlg trusts is checked here, before any tensor is read: a known kind and a numeric dtype,
finite and increasing values where numbers are read as such (value range, w0, coordinate
scale, lattice geometry), a bounded grid and signal, and widths that the bytes on disk can hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from ..data.signal import AXES, SignalError, SignalInfo
from ..errors import DistlgError
from ..geometry import GeometryError, PartitionGrid
from ..nn.architecture import Architecture

FORMAT = "distlg-model"
VERSIONS = (1, 2)
MAX_PARTITIONS = 1 << 28
"""The largest partition grid a model may have (an hour of 4K video at 50x32x32 partitions has
about 1.7 x 10^7)."""
MAX_VALUES = 1 << 50
"""The largest signal (values per channel) a model may describe."""


class ModelDirError(DistlgError):
    """A model directory that is missing, incomplete, tampered with or unsafe."""


@dataclass(frozen=True)
class Manifest:
    """The description of a model directory (either format), checked."""

    version: int
    signal: SignalInfo
    grid: PartitionGrid
    arch: Architecture
    training: dict | None
    """Checkpoints only: step, world_size, optimizer_step, config (and the harmonizer's
    location for INCODE runs)."""
    raw: dict
    """The document as read (what an edit copies forward)."""

    @property
    def is_checkpoint(self) -> bool:
        return self.training is not None

    @classmethod
    def parse(cls, doc: Any, where: str) -> "Manifest":
        """Check ``doc`` (a parsed JSON document) and build the manifest; a ``ModelDirError``
        naming ``where`` for anything that does not hold."""
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise ModelDirError(f"{where} is not a distlg model description")
        if doc.get("version") not in VERSIONS:
            raise ModelDirError(f"{where} has format version {doc.get('version')!r}; this distlg "
                                f"reads versions {', '.join(map(str, VERSIONS))}")
        try:
            signal = _signal(doc["signal"], where)
            grid = _grid(doc["grid"], signal, where)
            arch = _arch(doc["architecture"], signal, where)
        except (KeyError, TypeError, ValueError, SignalError, GeometryError) as exc:
            if isinstance(exc, ModelDirError):
                raise
            raise ModelDirError(f"{where} is malformed: {exc}") from None
        training = doc.get("training")
        if training is not None and not isinstance(training, dict):
            raise ModelDirError(f"{where}: training must be a mapping")
        return cls(int(doc["version"]), signal, grid, arch, training, doc)


def _finite(values: Sequence[Any], what: str, where: str, positive: bool = False) -> None:
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or (positive and v <= 0):
            rule = "positive finite numbers" if positive else "finite numbers"
            raise ModelDirError(f"{where}: {what} must be {rule}, got {list(values)}")


def _signal(d: dict, where: str) -> SignalInfo:
    if d.get("kind") not in AXES:
        raise ModelDirError(f"{where}: unknown signal kind {d.get('kind')!r}")
    _finite(d["value_range"], "signal.value_range", where)
    shape = list(d["shape"])
    if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
        raise ModelDirError(f"{where}: signal.shape must be positive integers, got {shape}")
    if math.prod(shape) > MAX_VALUES:
        raise ModelDirError(f"{where}: a signal of shape {shape} is larger than distlg handles")
    signal = SignalInfo.from_dict(d)
    if signal.dtype.kind not in "uif" or not 1 <= signal.channels <= 4096:
        raise ModelDirError(f"{where}: signal dtype {signal.dtype} with {signal.channels} "
                            "channel(s) is not a numeric signal distlg writes")
    return signal


def _grid(g: dict, signal: SignalInfo, where: str) -> PartitionGrid:
    factors = list(g["factors"])
    if not all(isinstance(f, int) and not isinstance(f, bool) for f in factors):
        raise ModelDirError(f"{where}: grid.factors must be integers, got {factors}")
    if math.prod(max(f, 1) for f in factors) > MAX_PARTITIONS:
        raise ModelDirError(f"{where}: a grid of {factors} partitions is larger than distlg "
                            f"handles ({MAX_PARTITIONS:,})")
    return PartitionGrid(signal.shape, tuple(factors), tuple(g["overlaps"]), tuple(g.get("extent", ())))


def _arch(d: dict, signal: SignalInfo, where: str) -> Architecture:
    _finite([d["w0"]], "architecture.w0", where, positive=True)
    _finite(d.get("coord_scale", ()), "architecture.coord_scale", where, positive=True)
    _finite(d.get("cell_origin", ()), "architecture.cell_origin", where)
    _finite(d.get("part_size", ()), "architecture.part_size", where, positive=True)
    for name in ("in_dims", "out_dims", "hidden_layers", "local_width", "global_width"):
        value = d.get(name, 0)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1 << 16:
            raise ModelDirError(f"{where}: architecture.{name} must be an integer in 0..65536, "
                                f"got {value!r}")
    arch = Architecture.from_dict(d)
    if arch.in_dims != len(signal.shape) or arch.out_dims != signal.channels:
        raise ModelDirError(f"{where}: the architecture maps {arch.in_dims} to {arch.out_dims} "
                            f"values, the signal has {len(signal.shape)} axes and "
                            f"{signal.channels} channel(s)")
    return arch


def id_ranges(ids: Sequence[int], limit: int = 40) -> str:
    """Compact text for a list of ids: 1-4, 7, 9-10 (at most ``limit`` runs, then a count)."""
    ids = sorted(int(i) for i in ids)
    runs: list[str] = []
    start = None
    for i, p in enumerate(ids):
        if start is None:
            start = p
        if i + 1 == len(ids) or ids[i + 1] != p + 1:
            runs.append(f"{start}" if start == p else f"{start}-{p}")
            start = None
    if len(runs) > limit:
        return ", ".join(runs[:limit]) + f", ... ({len(ids):,} in all)"
    return ", ".join(runs)
