"""Crop: keep a model's partitions in a region and drop the others, retraining nothing.

Partitions are whole: a box selects every partition whose (un-grown) box it touches, so
``keep`` keeps everything needed to render the box and ``drop`` removes everything that could
render any of it. The global branch is kept; the local weights fall in proportion to the
partitions removed, and every kept partition renders exactly what it rendered before.

On disk (format 2) a crop keeps whole shards (hard-linked into a new directory, or left where
they are), rewrites only the shards the region cuts, and leaves out those it drops entirely;
format 1 keeps and deletes files. In place, the model's checksums and root document change
first, so an interrupted crop leaves a consistent model (possibly with dropped partitions'
bytes still on disk).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from ..geometry import Box
from .files import FileModel, manifest_for, write_manifest
from .format import ModelDir, ModelDirError, id_ranges
from .output import output
from .rewrite import shard_masks, write_checksums, write_root, write_subset
from .sharded import ShardedModel
from .weights import LocalWeights


@dataclass
class CropReport:
    path: Path | str
    """The cropped model directory."""
    kept: list[int]
    """Ids of the partitions kept."""
    dropped: list[int]
    before: dict[str, int]
    """Parameters before: global, local, total."""
    after: dict[str, int]


def box_mask(grid, box: Box) -> np.ndarray:
    """bool [num_partitions]: the partitions whose un-grown boxes touch ``box``."""
    mask = np.zeros(grid.factors, dtype=bool)
    index = tuple(slice(a // p, (b - 1) // p + 1) for (a, b), p in zip(box, grid.part_shape))
    if all(b > a for a, b in box):
        mask[index] = True
    return mask.ravel()


def select(md: ModelDir, keep: Sequence[Box] = (), drop: Sequence[Box] = (),
           drop_ids: Sequence[int] = (), drop_along: Sequence[tuple[int, Sequence[int]]] = ()
           ) -> list[int]:
    """Ids of the present partitions a crop keeps: those touching any ``keep`` box (all, if
    none is given), less those touching a ``drop`` box, those in ``drop_ids`` and those whose
    index along an axis is listed in ``drop_along``."""
    grid = md.grid
    kept = md.present.copy()
    if keep:
        kept &= np.logical_or.reduce([box_mask(grid, box) for box in keep])
    for box in drop:
        kept &= ~box_mask(grid, box)
    ids = np.asarray(list(drop_ids), dtype=np.int64)
    outside = ids[(ids < 0) | (ids >= grid.num_partitions)]
    if len(outside):
        raise ModelDirError(f"partitions {id_ranges(outside.tolist())} do not exist: the grid has "
                            f"ids 0-{grid.num_partitions - 1}")
    kept[ids] = False
    cube = kept.reshape(grid.factors)
    for axis, indices in drop_along:
        if any(not 0 <= i < grid.factors[axis] for i in indices):
            raise ModelDirError(f"axis {md.signal.axes[axis]} has partition indices "
                                f"0-{grid.factors[axis] - 1}, got {id_ranges(indices)}")
        where = [slice(None)] * grid.ndim
        where[axis] = list(indices)
        cube[tuple(where)] = False
    if not kept.any():
        raise ModelDirError("the crop would leave no partition; keep at least one")
    return np.flatnonzero(kept).tolist()


def crop(model: str | Path | ModelDir, kept: Sequence[int], out: str | Path | None = None,
         progress: bool = False) -> CropReport:
    """Keep only partitions ``kept`` of ``model``: in a new directory ``out`` (a path or an
    s3:// URL), or in place when ``out`` is None."""
    md = model if isinstance(model, ModelDir) else ModelDir.open(model)
    if md.is_checkpoint:
        raise ModelDirError(f"{md.path} is a checkpoint; export it (distlg export) and crop that")
    kept_ids = np.unique(np.asarray(md.check_held(kept), dtype=np.int64))
    keep = np.zeros(md.grid.num_partitions, dtype=bool)
    keep[kept_ids] = True
    before = md.params()
    dropped = np.flatnonzero(md.present & ~keep).tolist()
    if out is None:
        _crop_in_place(md, keep)
        path = md.path
    else:
        fmt = "shards" if isinstance(md, ShardedModel) else "safetensors"
        with output(out, md) as location:
            write_subset(md, location, keep, fmt, progress)
        path = out
    return CropReport(path, kept_ids.tolist(), dropped, before, ModelDir.open(path).params())


def _crop_in_place(md: ModelDir, keep: np.ndarray) -> None:
    if isinstance(md, FileModel):
        md.verify([p for p in md.entries if keep[p]])
        entries = [dict(e) for p, e in md.entries.items() if keep[p]]
        write_manifest(md.location.path, manifest_for(md.grid, md.arch, md.signal,
                                                      dict(md.manifest.raw["global"]), entries))
        for p, e in md.entries.items():
            if not keep[p]:
                (md.location.path / e["file"]).unlink(missing_ok=True)
        return
    location = md.location if md.location.writable else type(md.location)(md.location.spec, True)
    local = md.weights
    plans = []
    count = int(np.prod(md.shards.shards)) if md.local_layout.width else 0
    for shard in range(count):   # read and check before changing anything
        held, kept = shard_masks(md, keep, shard)
        if (kept == held).all():
            continue
        if kept.any():
            data = local.read(shard)
            md._check_codes(md.shards.partitions(shard)[held], data.crcs[held], local.array.location, shard)
            plans.append((shard, data.keep(kept)))
        else:
            plans.append((shard, None))
    codes = md.codes.copy()
    codes[~keep] = 0
    write_checksums(location, md, codes)
    write_root(location, md, int(keep.sum()), md.global_checksum)
    target = LocalWeights(location, md.shards, md.local_layout, md.quantization,
                          tuple(md.arch.constant_shapes()))
    for shard, data in plans:
        target.delete(shard) if data is None else target.write(shard, data)
