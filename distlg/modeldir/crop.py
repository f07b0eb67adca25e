"""Crop: keep a model's partitions in a region and delete the others' files, retraining nothing.

Partitions are whole: a box selects every partition whose (un-grown) box it touches, so
``keep`` keeps everything needed to render the box and ``drop`` removes everything that could
render any of it. The global branch is kept; the local weights fall in proportion to the
partitions removed, and every kept partition renders exactly what it rendered before (its file
and the global file are the same bytes, hard-linked where possible).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..geometry import Box
from .format import (
    ModelDir,
    ModelDirError,
    id_ranges,
    link_or_copy,
    manifest_for,
    staged_directory,
    write_manifest,
)


@dataclass
class CropReport:
    path: Path
    """The cropped model directory."""
    kept: list[int]
    dropped: list[int]
    before: dict[str, int]
    """Parameters before: global, local, total."""
    after: dict[str, int]


def select(md: ModelDir, keep: Sequence[Box] = (), drop: Sequence[Box] = (),
           drop_ids: Sequence[int] = (), drop_along: Sequence[tuple[int, Sequence[int]]] = ()
           ) -> list[int]:
    """Ids of the present partitions a crop keeps: those touching any ``keep`` box (all, if
    none is given), less those touching a ``drop`` box, those in ``drop_ids`` and those whose
    index along an axis is listed in ``drop_along``."""
    grid = md.grid
    kept = set(md.partition_ids)
    if keep:
        kept &= {p for box in keep for p in grid.intersecting(box)}
    for box in drop:
        kept -= set(grid.intersecting(box))
    outside = [p for p in drop_ids if not 0 <= p < grid.num_partitions]
    if outside:
        raise ModelDirError(f"partitions {id_ranges(outside)} do not exist: the grid has ids "
                            f"0-{grid.num_partitions - 1}")
    kept -= set(drop_ids)
    for axis, indices in drop_along:
        if any(not 0 <= i < grid.factors[axis] for i in indices):
            raise ModelDirError(f"axis {md.signal.axes[axis]} has partition indices "
                                f"0-{grid.factors[axis] - 1}, got {id_ranges(indices)}")
        gone = set(indices)
        kept = {p for p in kept if grid.index(p)[axis] not in gone}
    if not kept:
        raise ModelDirError("the crop would leave no partition; keep at least one")
    return sorted(kept)


def crop(model: str | Path | ModelDir, kept: Sequence[int], out: str | Path | None = None
         ) -> CropReport:
    """Keep only partitions ``kept`` of ``model``: in a new directory ``out`` (files
    hard-linked), or in place when ``out`` is None (manifest rewritten first, then the dropped
    files deleted, so the model stays consistent if interrupted)."""
    md = model if isinstance(model, ModelDir) else ModelDir.open(model)
    if md.is_checkpoint:
        raise ModelDirError(f"{md.path} is a checkpoint; export it (distlg export) and crop that")
    entries = md.entries
    kept = sorted(int(p) for p in kept)
    absent = [p for p in kept if p not in entries]
    if absent:
        raise ModelDirError(f"{md.path}: partitions {id_ranges(absent)} are not in this model")
    files = [md.manifest["global"]["file"]] + [entries[p]["file"] for p in kept]
    md.verify([md.manifest["global"]] + [entries[p] for p in kept])  # before anything is written
    manifest = manifest_for(md.grid, md.arch, md.signal, dict(md.manifest["global"]),
                            [dict(entries[p]) for p in kept])
    kept_set = set(kept)
    dropped = [p for p in md.partition_ids if p not in kept_set]
    if out is None:
        path = md.path
        write_manifest(path, manifest)
        for p in dropped:
            (path / entries[p]["file"]).unlink(missing_ok=True)
    else:
        with staged_directory(out, md.path) as staging:
            for name in files:
                link_or_copy(md.path / name, staging / name)
            write_manifest(staging, manifest)
        path = Path(out)
    return CropReport(path, kept, dropped, md.params(), ModelDir.open(path).params())
