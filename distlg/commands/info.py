"""Describe a model directory or checkpoint: what signal it encodes, its partition grid and
architecture, which partitions it holds and which are missing (cropped), its weights by part
and the region it still covers. Reads the manifest only.
"""

from __future__ import annotations

import argparse
import math

from ..modeldir.format import ModelDir, id_ranges
from ..rendering.region import bounding_box, box_text

HELP = "describe a model: geometry, partitions present and missing, weights, region covered"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="model directory (or checkpoint)")


def weights_text(params: dict[str, int]) -> str:
    """``123,456 weights (global 12,345 = 10.0 %, local 111,111)``."""
    share = 100 * params["global"] / max(params["total"], 1)
    return (f"{params['total']:,} weights (global {params['global']:,} = {share:.1f} %, "
            f"local {params['local']:,})")


def _sizes(values) -> str:
    return " x ".join(str(v) for v in values)


def describe(md: ModelDir) -> list[str]:
    """The lines ``distlg info`` prints."""
    s, g, a = md.signal, md.grid, md.arch
    present, missing = md.partition_ids, md.missing
    source = s.meta.get("source")
    lines = [
        f"model       {md.path} ({md.manifest['format']} version {md.manifest['version']}"
        + (f", checkpoint of step {md.manifest['training'].get('step')})" if md.is_checkpoint else ")"),
        f"signal      {s.kind} {' x '.join(f'{n}={d}' for n, d in zip(s.axes, s.shape))}, "
        f"{s.channels} channel(s), {s.dtype.name}, values {s.value_range[0]:g}..{s.value_range[1]:g}"
        + (f" ({source})" if source else ""),
        f"grid        {_sizes(g.factors)} = {g.num_partitions} partitions of {_sizes(g.part_shape)}; "
        f"halo {_sizes(g.overlaps)}; padding {_sizes(g.padding)}; coordinate extent {_sizes(g.extent)}",
        f"network     {a.arch}, {a.hidden_layers} hidden layers, local width {a.local_width}, "
        f"global width {a.global_width}, w0 {a.w0:g}, merge {a.merge}",
        f"partitions  {len(present)} of {g.num_partitions} present"
        + (f"; missing {id_ranges(missing)}" if missing else ""),
        f"weights     {weights_text(md.params())}; {a.local_params():,} per partition",
    ]
    box = bounding_box(g, present)
    if box is not None:
        full = math.prod(b - a for a, b in box) == sum(
            math.prod(b - a for a, b in g.valid_box(p)) for p in present)
        lines.append(f"region      {box_text(box)}"
                     + (" (complete)" if full else " (bounding box; partitions inside it are missing)"))
    return lines


def run(args: argparse.Namespace) -> int:
    print("\n".join(describe(ModelDir.open(args.model))))
    return 0
