"""Describe a model directory or checkpoint: what signal it encodes, its partition grid and
architecture, which partitions it holds and which are missing (cropped), its weights by part
and the region it still covers. Reads the root document and the partitions' checksums only
(format 1: the manifest).

Given a signal store instead (a folder with zarr.json, or a URL: https://, s3://), describe the
signal it holds, its chunking and whether its ingest finished. Reads zarr.json only (and, for a
store, one listing of its objects for the size).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..modeldir.format import ModelDir

HELP = ("describe a model (geometry, partitions present and missing, weights, region covered) "
        "or a signal store")


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="model directory (or checkpoint; of a run "
                   "directory its final model, else its latest checkpoint), or a signal store "
                   "written by `distlg ingest` (a path, or an https:// or s3:// URL)")


def weights_text(params: dict[str, int]) -> str:
    """``123,456 weights (global 12,345 = 10.0 %, local 111,111)``."""
    share = 100 * params["global"] / max(params["total"], 1)
    return (f"{params['total']:,} weights (global {params['global']:,} = {share:.1f} %, "
            f"local {params['local']:,})")


def stored_text(md: ModelDir) -> str:
    """``61,234 bytes in 15 files (0.30x the weights as float32, 204,172 bytes; 9.6 bits a
    weight)``: the bytes on disk next to the weights."""
    objects, size = md.storage()
    weights = md.params()["total"]
    return (f"{size:,} bytes" + (f" in {objects:,} files" if objects >= 0 else "")
            + f" ({size / max(4 * weights, 1):.2f}x the weights as float32, {4 * weights:,} bytes; "
            f"{8 * size / max(weights, 1):.1f} bits a weight)")


def quantization_text(q) -> str:
    """What a quantized model stores (``distlg.modeldir.quantize``), in one line."""
    if q.dtype == "float16":
        what = "float16 weights (each within 2^-11 of itself)"
    else:
        what = (f"int8 codes x {q.scale} scales (each weight within half its scale; biases and "
                "first-layer weights 2 codes a value)")
    return f"{what}; shards zstd-compressed (level {q.level})"


def _sizes(values) -> str:
    return " x ".join(str(v) for v in values)


def describe(md: ModelDir) -> list[str]:
    """The lines ``distlg info`` prints (the root document, and the checksums for the region)."""
    from ..modeldir.format import id_ranges
    from ..rendering.region import bounding_box, box_text

    s, g, a = md.signal, md.grid, md.arch
    present = md.present
    held = int(present.sum())
    source = s.source
    layout = "one file per partition" if md.version == 1 else \
        f"shards of {_sizes(md.shards.block)} partitions"
    lines = [
        f"model       {md.path} (distlg-model version {md.version}, {layout}"
        + (f"; checkpoint of step {md.training.get('step')})" if md.is_checkpoint else ")"),
        f"signal      {s.kind} {' x '.join(f'{n}={d}' for n, d in zip(s.axes, s.shape))}, "
        f"{s.channels} channel(s), {s.dtype.name}, values {s.value_range[0]:g}..{s.value_range[1]:g}"
        + (f" ({source})" if source else ""),
        f"grid        {_sizes(g.factors)} = {g.num_partitions:,} partitions of {_sizes(g.part_shape)}; "
        f"halo {_sizes(g.overlaps)}; padding {_sizes(g.padding)}; coordinate extent {_sizes(g.extent)}",
        f"network     {a.arch}, {a.hidden_layers} hidden layers, local width {a.local_width}, "
        f"global width {a.global_width}, w0 {a.w0:g}, merge {a.merge}",
        f"partitions  {held:,} of {g.num_partitions:,} present"
        + (f"; missing {id_ranges(np.flatnonzero(~present).tolist())}" if held < g.num_partitions else ""),
        f"weights     {weights_text(md.params())}; {a.local_params():,} per partition",
    ]
    quantization = getattr(md, "quantization", None)
    if quantization is not None:
        lines.append(f"quantized   {quantization_text(quantization)}")
    lines.append(f"stored      {stored_text(md)}")
    box = bounding_box(g, np.flatnonzero(present))
    if box is not None:
        full = math.prod(b - a for a, b in box) == _held_volume(g, present)
        lines.append(f"region      {box_text(box)}"
                     + (" (complete)" if full else " (bounding box; partitions inside it are missing)"))
    return lines


def _held_volume(grid, present: np.ndarray) -> int:
    """Samples the present partitions cover (their boxes clipped to the signal)."""
    index = np.stack(np.unravel_index(np.flatnonzero(present), grid.factors), -1)
    part, shape = np.asarray(grid.part_shape), np.asarray(grid.shape)
    sizes = np.minimum((index + 1) * part, shape) - index * part
    return int(np.prod(sizes, axis=1, dtype=np.int64).sum())


def describe_store(path: str) -> list[str]:
    """The lines ``distlg info STORE`` prints; an incomplete store is described, not refused."""
    from ..data import integrity, remote, store
    from ..data.signal import SignalInfo, StoreError

    array = store.open_array(store.location(path))
    if array is None:
        raise StoreError(f"{path} is neither a model directory nor a distlg signal store")
    desc = store.info(array)
    shape, axes = array.shape[:-1], desc["axes"]
    done = desc.get("ingest", {}).get("done", 0)
    state = ("complete" if desc.get("complete") else
             f"incomplete: ingest stopped after {done} of {shape[0]} {axes[0]} rows; run the "
             "same `distlg ingest` again to resume it")
    if "render" in desc and not desc.get("complete"):
        state = "incomplete: a render that did not finish; render it again"
    elif desc.get("complete") and (desc.get("integrity") or {}).get("every_chunk") \
            and not remote.is_url(path):  # every chunk was written: each must be there
        missing, total = integrity.missing_chunks(path, array)
        if missing:
            state = (f"damaged: chunk {missing[0]} is missing ({len(missing)} of {total}); "
                     "ingest it again")
    values = (f"values {desc['value_range'][0]:g}..{desc['value_range'][1]:g}"
              if "value_range" in desc else "value range not yet known")
    source = desc.get("meta", {}).get("source")
    chunking = desc.get("chunking", {})
    chunks = _sizes(array.chunks) + (f" in shards of {_sizes(array.shards)}" if array.shards else "")
    raw = math.prod(array.shape) * array.dtype.itemsize
    stored = store.stored_bytes(store.location(path))
    return [
        f"store       {path} ({desc['format']} version {desc['version']}, {state})",
        f"signal      {desc['kind']} {' x '.join(f'{n}={d}' for n, d in zip(axes, shape))}, "
        f"{array.shape[-1]} channel(s), {array.dtype}, {values}" + (f" ({source})" if source else ""),
        f"chunks      {chunks}" + (f"; aligned with partitions {_sizes(chunking['factors'])} of "
                                    f"{_sizes(chunking['part_shape'])}"
                                    if chunking.get("factors") and chunking.get("part_shape") else ""),
        f"stored      {raw:,} bytes in {stored:,} ({raw / max(stored, 1):.1f}x)",
        *_task_lines(SignalInfo.facts(desc.get("meta", {}))),
    ]


def _task_lines(facts: dict) -> list[str]:
    """What ingest did for a downstream task (``distlg.data.degrade``), if anything; ``facts``
    as ``SignalInfo.facts`` reads them."""
    m, lines = facts.get("measurement"), []
    if m:
        kind = "the image is its reference" if m.reference else (
            "measured: the image is its back-projection, no reference")
        lines.append(f"task        CT: sinogram {_sizes(m.shape)} at {len(m.angles)} "
                     f"angles; {kind}")
    if facts.get("downsample", 1) > 1:
        lines.append(f"task        super-resolution: {facts['downsample']}x block means of "
                     f"{_sizes(facts.get('original_shape', []))}")
    if facts.get("noise"):
        lines.append(f"task        denoising: {facts['noise']} noise, seed {facts.get('noise_seed')}")
    return lines


def _model_of(spec: str) -> str:
    """``spec``, or for a run directory its model (``RUN/model``), else its latest checkpoint."""
    from ..modeldir.runs import is_complete, latest

    path = Path(spec)
    if "://" in spec or is_complete(path) or not path.is_dir():
        return spec
    if is_complete(path / "model"):
        return str(path / "model")
    found = latest(path)
    return str(found) if found is not None else spec


def is_store(spec: str) -> bool:
    """Whether ``spec`` names a signal store (a Zarr array) rather than a model directory (a
    Zarr group, or a folder with manifest.json)."""
    import json

    from ..modeldir.location import Location

    try:
        doc = json.loads(Location(spec).read("zarr.json") or b"null")
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(doc, dict) and doc.get("node_type") == "array"


def run(args: argparse.Namespace) -> int:
    from ..modeldir.format import ModelDir

    if is_store(args.model):
        lines = describe_store(args.model)
    else:
        lines = describe(ModelDir.open(_model_of(args.model)))
    print("\n".join(lines))
    return 0
