"""Crop a model to a region by dropping partitions: no retraining, and every kept partition
renders exactly what it rendered before.

Write the result to a new directory OUT (a local folder, or a new s3:// prefix; shards whose
partitions all stay are hard-linked or copied unchanged, only shards the region cuts are
rewritten) or change the model --in-place. Partitions are whole: a BOX selects every
partition it touches, so --keep keeps all that is needed to render the box, and --drop removes
all that could render any of it.
Options combine: the kept partitions are those touching a --keep box (all, if none is given)
less every one that a --drop, --drop-partitions or --drop-along names. The global branch
stays; the local weights fall in proportion to the partitions removed.

BOX is START:STOP per axis in signal units (frames, pixels, voxels, samples), comma separated
in the signal's axis order (`distlg info` lists them), e.g. 0:50,100:228,0:256; an end left out
or a missing axis means the whole axis; or name axes: t=0:50.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "keep a region of a model, dropping the other partitions"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="model directory to crop")
    p.add_argument("out", metavar="OUT", nargs="?",
                   help="new directory for the cropped model (must not exist, or be empty)")
    p.add_argument("--in-place", action="store_true",
                   help="crop MODEL itself: its checksums and root document first, then the "
                   "shards (or files) the crop cuts or drops")
    p.add_argument("--keep", action="append", default=[], metavar="BOX",
                   help="keep the partitions touching BOX (repeatable: their union)")
    p.add_argument("--drop", action="append", default=[], metavar="BOX",
                   help="drop the partitions touching BOX (repeatable)")
    p.add_argument("--drop-partitions", action="append", default=[], metavar="IDS",
                   help="drop partitions by id, e.g. 3,5,10-12 (repeatable)")
    p.add_argument("--drop-along", action="append", default=[], metavar="AXIS=INDICES",
                   help="drop every partition whose index along AXIS (name or number) is listed, "
                   "e.g. t=0,3-4 drops the first, fourth and fifth layers of partitions along t")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="show a progress bar (default: on)")


def run(args: argparse.Namespace) -> int:
    from ..errors import DistlgError
    from ..modeldir.crop import crop, select
    from ..modeldir.format import ModelDir
    from ..outputs import check_apart, exclusive, refuse_url
    from ..rendering.region import bounding_box, box_text, parse_along, parse_box, parse_ids
    from .info import weights_text

    if (args.out is None) == (not args.in_place):
        raise DistlgError("give either OUT or --in-place")
    if not (args.keep or args.drop or args.drop_partitions or args.drop_along):
        raise DistlgError("nothing to crop: give --keep, --drop, --drop-partitions or --drop-along")
    if args.out is not None:
        refuse_url(args.out, "OUT", writable=("s3",))
        if "://" not in str(args.out) and Path(args.out).resolve() == Path(args.model).resolve():
            raise DistlgError(f"OUT {args.out} is the model itself; use --in-place to crop it "
                              "where it is")
        check_apart(args.out, {"model": args.model}, "OUT")
    md = ModelDir.open(args.model)
    shape, axes = md.grid.shape, md.signal.axes
    kept = select(md, keep=[parse_box(b, shape, axes) for b in args.keep],
                  drop=[parse_box(b, shape, axes) for b in args.drop],
                  drop_ids=[i for text in args.drop_partitions
                            for i in parse_ids(text, md.grid.num_partitions)],
                  drop_along=[parse_along(text, axes, md.grid.factors) for text in args.drop_along])
    with exclusive(args.out or args.model, "OUT" if args.out else "MODEL"):
        report = crop(md, kept, args.out, progress=args.progress)
    before, after = report.before, report.after
    print(f"kept {len(report.kept):,} of {len(report.kept) + len(report.dropped):,} partitions "
          f"(region {box_text(bounding_box(md.grid, report.kept))}) in {report.path}")
    print(f"weights before: {weights_text(before)}")
    print(f"weights after:  {weights_text(after)} ({100 * after['total'] / before['total']:.1f} % "
          f"of the total, {100 * after['local'] / max(before['local'], 1):.1f} % of the local)")
    return 0
