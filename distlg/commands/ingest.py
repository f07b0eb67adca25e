"""Ingest a signal into a Zarr store that `distlg train --signal STORE` reads.

SOURCE is a video file (.mp4 .mkv .webm .mov .avi), a folder of numbered frames (PNG, JPEG,
TIFF), a volume (.npy; a raw file with --shape and --dtype; a TIFF stack), an image (PNG, JPEG),
a WAV file, or builtin:NAME[@HxW]. The store keeps the source's sample type, is chunked along
the partition grid training will use (chunks of about 0.5-2 MB), and is compressed with
Blosc/zstd. Ingest streams the source a slab at a time; run it again after an interruption and
it resumes where it stopped.

    distlg ingest ../shared/data/bikes.mp4                      # -> storage/signals/bikes.zarr
    distlg ingest builtin:astronaut@256x256 storage/signals/astronaut.zarr
    distlg ingest scan.raw --shape 512 512 512 --dtype uint16 --partition-size 64
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.signal import KINDS

HELP = "turn a video, frames, volume, image or audio file into a signal store"
DEFAULT_ROOT = Path("storage") / "signals"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE", help="file, folder of frames, or builtin:NAME[@HxW]")
    p.add_argument("store", metavar="STORE", nargs="?",
                   help=f"store to write (default: {DEFAULT_ROOT}/<source name>.zarr)")
    s = p.add_argument_group("reading the source")
    s.add_argument("--kind", choices=KINDS,
                   help="read the source as this kind: a folder of frames or a TIFF stack as a "
                   "volume (z, y, x) instead of a video; an array as any kind whose axes match "
                   "(default: from the source)")
    s.add_argument("--shape", type=int, nargs="+", metavar="N",
                   help="array shape of a raw file, first axis first (channels last, if any)")
    s.add_argument("--dtype", metavar="TYPE",
                   help="sample type of a raw file: uint8, uint16, int16, float32, ... ('<u2' or "
                   "'>u2' for an explicit byte order)")
    s.add_argument("--fps", type=float, metavar="X",
                   help="frame rate to record for frames, TIFF stacks and arrays read as video "
                   "(video files record their own)")
    s.add_argument("--sample-rate", type=float, metavar="X",
                   help="sample rate to record for arrays read as audio (WAV files record their own)")
    c = p.add_argument_group("chunking (match what you will train with)")
    c.add_argument("--factors", type=int, nargs="+", metavar="N",
                   help="partitions per axis that training will use (one value, or one per axis); "
                   "chunks are cut along their boundaries")
    c.add_argument("--partition-size", type=int, nargs="+", metavar="N",
                   help="target partition size per axis when --factors is not given (default: "
                   "train's: 32 per axis; video 50 32 32; audio 1/32 of the clip)")
    c.add_argument("--chunks", type=int, nargs="+", metavar="N",
                   help="chunk shape per signal axis, overriding the partition-aligned choice")
    o = p.add_argument_group("output")
    o.add_argument("--overwrite", action="store_true",
                   help="replace a complete store that holds a different signal (an incomplete "
                   "one is always resumed or restarted)")
    o.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="show a progress bar on a terminal (default: on)")


def default_store(source: str) -> Path:
    """storage/signals/<name>.zarr for a source file, folder or built-in name."""
    name = source.split(":", 1)[1] if source.startswith("builtin:") else Path(source.rstrip("/")).stem
    return DEFAULT_ROOT / f"{name.replace('@', '-')}.zarr"


def run(args: argparse.Namespace) -> int:
    from ..data.ingest import IngestOptions, ingest

    options = IngestOptions(kind=args.kind, shape=args.shape, dtype=args.dtype,
                            factors=args.factors, partition_size=args.partition_size,
                            chunks=args.chunks, fps=args.fps, sample_rate=args.sample_rate,
                            overwrite=args.overwrite, progress=args.progress)
    r = ingest(args.source, args.store or default_store(args.source), options)
    shape = "x".join(map(str, r.shape))
    chunks = "x".join(map(str, r.chunks))
    grid = "x".join(map(str, r.chunking["factors"]))
    part = "x".join(map(str, r.chunking["part_shape"]))
    ratio = r.raw_bytes / max(r.stored_bytes, 1)
    print(f"{r.path}: {r.status}; {shape} {r.dtype}, chunks {chunks} (partitions {grid} of "
          f"{part}); {r.raw_bytes / 1e6:,.1f} MB stored in {r.stored_bytes / 1e6:,.1f} MB "
          f"({ratio:.1f}x) in {r.seconds:.1f} s")
    return 0
