"""Render a region of a model to a file, streaming: only the files of the partitions that
intersect the region are read, values are computed slab by slab (whole frames, rows or
slices along the first axis) and written as they come, so memory stays bounded whatever the
region's size.

The output format follows OUT's suffix: .zarr or .npy (any signal, in its dtype and units),
.mp4 (video), .png (an image, or one file per frame or slice: NAME-000000.png ...), .wav
(audio), .ply or .obj (the iso-surface of a volume, by marching cubes), .ome.zarr (an image,
video or volume as OME-Zarr for napari and neuroglancer: axes [t,] c, [z,] y, x with their
units, a pyramid of --levels levels, each rendered from the model at half the previous
level's scale in space). OUT must not exist.

BOX is START:STOP per axis in signal units, comma separated in the signal's axis order, e.g.
0:50,100:228,0:256 (an end left out or a missing axis means all of it), or named: t=0:50.
A region that needs partitions the model no longer holds (cropped) fails, naming them, unless
--fill gives a value to render there. --scale samples the region on a finer (2) or coarser
(0.5) grid, per axis if wanted (1,2,2): the representation is continuous. At scale S the samples
tile each signal sample's footprint S to an axis, so a model of a store ingested with
--downsample S renders on the original's grid (super-resolution), and --compare scores it
against the original.
"""

from __future__ import annotations

import argparse

HELP = "render a region of a model to zarr, OME-Zarr, npy, mp4, png, wav or a mesh, streaming"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="model directory")
    p.add_argument("--out", required=True, metavar="OUT",
                   help="output file (format from its suffix: .zarr .ome.zarr .npy .mp4 .png .wav "
                   ".ply .obj)")
    p.add_argument("--region", metavar="BOX", help="region to render (default: the whole signal)")
    p.add_argument("--scale", default="1", metavar="S",
                   help="samples per signal sample, one factor or one per axis, e.g. 2 or 1,2,2 "
                   "(default: 1, the signal's own grid)")
    p.add_argument("--fill", type=float, metavar="VALUE",
                   help="value (signal units) rendered where partitions were cropped away "
                   "(default: such a region is an error)")
    p.add_argument("--compare", metavar="SIGNAL",
                   help="print the PSNR (and SSIM, for images) of the render against this "
                   "signal (a store or builtin:NAME@HxW): at scale 1 the signal the model "
                   "encodes; at an integer scale S that signal at S times the resolution, e.g. "
                   "the original of a store ingested with --downsample S")
    p.add_argument("--rate", type=float, metavar="HZ",
                   help="frame rate (mp4) or sample rate (wav) of the signal at scale 1 "
                   "(default: the signal's own, else 25 fps / 44100 Hz)")
    p.add_argument("--level", type=float, metavar="VALUE",
                   help="iso-value of a .ply/.obj surface, in signal units "
                   "(default: the middle of the value range)")
    p.add_argument("--levels", type=_positive, metavar="K",
                   help=".ome.zarr: pyramid levels, each rendered at half the previous level's "
                   "scale along the space axes (default: until the largest space axis is at "
                   "most 256 samples)")
    p.add_argument("--ome-version", default="0.5", choices=("0.5", "0.4"),
                   help=".ome.zarr: OME-NGFF 0.5 on Zarr v3 (default), or 0.4 on Zarr v2 for "
                   "viewers that read only that")
    p.add_argument("--device", default="cpu", help="device to evaluate on (default: cpu)")
    p.add_argument("--threads", type=_positive, metavar="N", help="CPU threads (default: torch's)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="show a progress bar (default: on)")


def _positive(text: str) -> int:
    """A whole number of at least 1 (argparse reports anything else in one line)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    import math
    import time
    from pathlib import Path

    import torch

    from ..data.store import open_signal
    from ..errors import DistlgError
    from ..modeldir.format import ModelDir
    from ..outputs import check_apart, exclusive, refuse_url
    from ..progress import progress
    from ..rendering import omezarr
    from ..rendering.compare import Comparison
    from ..rendering.limits import check_options, check_space
    from ..rendering.region import box_text, parse_box, parse_scale
    from ..rendering.render import RegionRender
    from ..rendering.writers import held_per_value, open_writer

    refuse_url(args.out, "--out")
    check_apart(args.out, {"model": args.model, "signal to compare with": args.compare}, "--out")
    if args.threads:
        torch.set_num_threads(args.threads)
    md = ModelDir.open(args.model)
    region = parse_box(args.region, md.grid.shape, md.signal.axes)
    plan = RegionRender(md, region, parse_scale(args.scale, md.grid.ndim), args.fill, args.device)
    plan.check_memory(held_per_value(args.out, plan))
    ome = omezarr.is_ome(args.out)
    if not ome and args.levels:
        raise DistlgError("--levels is for .ome.zarr outputs")
    plans = [plan]
    if ome:  # one render per pyramid level, each at its own scale
        omezarr.check_ome(plan.info, args.ome_version, args.levels)
        check_options(Path(args.out), plan.info, plan.render_grid.scale[0], args.rate, args.level)
        check_space(Path(args.out), plan.shape, plan.info)
        levels = args.levels or omezarr.auto_levels(plan.render_grid.shape, plan.info)
        plans = [plan] + [RegionRender(md, region, s, args.fill, args.device) for s in
                          omezarr.level_scales(plan.render_grid.scale, plan.info, levels)[1:]]
    compare = Comparison(open_signal(args.compare), plan) if args.compare else None
    values = math.prod(plan.shape)
    t0 = time.perf_counter()
    with exclusive(args.out, "--out"):  # one render to a name at a time
        writer = None
        try:  # from here on an error or an interrupt (SIGINT, SIGTERM) removes the staging folder
            writer = (omezarr.open_ome_writer(args.out, plans, args.ome_version) if ome
                      else open_writer(args.out, plan, args.rate, args.level))
            total = sum(math.prod(p.shape) for p in plans)
            with progress(total, "value", "render", enabled=args.progress, unit_scale=True) as bar:
                for level, part in enumerate(plans):
                    for slab in part:
                        writer.write(slab)
                        if compare is not None and level == 0:
                            compare.add(slab)
                        bar.update(slab.values.size)
            writer.close()
        except BaseException as exc:
            if writer is not None:  # (the writers clean up after themselves when they fail)
                writer.abort()
            raise _nothing_written(exc, args.out) from None
    seconds = time.perf_counter() - t0
    print(f"rendered {box_text(region)} at scale {args.scale}: {' x '.join(map(str, plan.shape))} = "
          f"{values:,} values from {len(plan.reads)} partition(s) in {seconds:.2f} s "
          f"({values / max(seconds, 1e-9):,.0f} values/s) to {args.out}"
          + (f" (OME-Zarr {args.ome_version}, {len(plans)} level(s))" if ome else ""))
    if compare is not None:
        ssim = compare.ssim
        print(f"PSNR of the region against {args.compare}: {compare.psnr:.2f} dB"
              + (f", SSIM {ssim:.4f}" if ssim is not None else ""))
    return 0


def _nothing_written(exc: BaseException, out: str) -> BaseException:
    """``exc`` with a message that says the render left nothing under ``out``."""
    from ..errors import DistlgError

    note = f"render stopped; nothing was written to {out}"
    if isinstance(exc, KeyboardInterrupt):
        return KeyboardInterrupt(note)
    if isinstance(exc, DistlgError):
        return type(exc)(f"{exc}; {note}")
    if isinstance(exc, OSError):
        return DistlgError(f"{exc.strerror or exc}: {exc.filename or out}; {note}")
    return exc
