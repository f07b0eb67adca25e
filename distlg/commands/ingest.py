"""Ingest a signal into a Zarr store that `distlg train --signal STORE` reads.

SOURCE is a video file (.mp4 .mkv .webm .mov .avi), a folder of numbered frames (PNG, JPEG,
TIFF), a volume (.npy; a raw file with --shape and --dtype; a TIFF stack), an image (PNG, JPEG),
a WAV file, or builtin:NAME[@HxW]. The store keeps the source's sample type, is chunked along
the partition grid training will use (chunks of about 0.5-2 MB), and is compressed with
Blosc/zstd; --shard packs the chunks into Zarr shards of whole partitions (fewer, larger
objects). Ingest streams the source a slab at a time; run it again after an interruption and
it resumes where it stopped.

    distlg ingest ../shared/data/bikes.mp4                      # -> storage/signals/bikes.zarr
    distlg ingest builtin:astronaut@256x256 storage/signals/astronaut.zarr
    distlg ingest scan.raw --shape 512 512 512 --dtype uint16 --partition-size 64
    distlg ingest scan.raw --shape 4096 4096 4096 --dtype uint8 --shard auto
    distlg ingest builtin:astronaut@256x256 lr.zarr --downsample 4     # super-resolution
    distlg ingest builtin:astronaut@256x256 noisy.zarr --noise gaussian:0.1
    distlg ingest builtin:phantom@256 ct.zarr --ct-angles 90           # CT reconstruction
    distlg ingest scan_sinogram.npy ct.zarr --sinogram                  # ... from a measurement
    distlg ingest ../shared/data/bikes.mp4 s3://signals/bikes.zarr   # object storage
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..data.ingest import IngestOptions
from ..data.sources.base import SourceOptions
from ..flags import add_fields, given

HELP = "turn a video, frames, volume, image or audio file into a signal store"
DEFAULT_ROOT = Path("storage") / "signals"
CHUNKING = ("factors", "partition_size", "chunks", "shard")
TASKS = ("downsample", "noise", "noise_seed", "ct_angles", "sinogram")


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="SOURCE", help="file, folder of frames, or builtin:NAME[@HxW]")
    p.add_argument("store", metavar="STORE", nargs="?",
                   help=f"store to write: a path (default: {DEFAULT_ROOT}/<source name>.zarr) or "
                   "an s3:// URL (`pip install 'distlg[s3]'`; AWS_* variables give the endpoint "
                   "and keys)")
    reading = [f.name for f in dataclasses.fields(SourceOptions)]
    add_fields(p.add_argument_group("reading the source"), IngestOptions, names=reading)
    add_fields(p.add_argument_group("chunking (match what you will train with)"), IngestOptions,
               names=CHUNKING)
    add_fields(p.add_argument_group("downstream tasks"), IngestOptions, names=TASKS)
    add_fields(p.add_argument_group("output"), IngestOptions, names=("overwrite", "progress"))


def default_store(source: str) -> Path:
    """storage/signals/<name>.zarr for a source file, folder or built-in name."""
    name = source.split(":", 1)[1] if source.startswith("builtin:") else Path(source.rstrip("/")).stem
    return DEFAULT_ROOT / f"{name.replace('@', '-')}.zarr"


def run(args: argparse.Namespace) -> int:
    from ..data.ingest import ingest

    options = IngestOptions(**given(args, IngestOptions))
    r = ingest(args.source, args.store or default_store(args.source), options)
    shape = "x".join(map(str, r.shape))
    chunks = "x".join(map(str, r.chunks))
    grid = "x".join(map(str, r.chunking["factors"]))
    part = "x".join(map(str, r.chunking["part_shape"]))
    ratio = r.raw_bytes / max(r.stored_bytes, 1)
    if "shards" in r.chunking:
        chunks += " in shards of " + "x".join(map(str, r.chunking["shards"]))
    print(f"{r.path}: {r.status}; {shape} {r.dtype}, chunks {chunks} (partitions {grid} of "
          f"{part}); {size(r.raw_bytes)} stored in {size(r.stored_bytes)} "
          f"({ratio:.1f}x) in {r.seconds:.1f} s")
    return 0


def size(n: int) -> str:
    """``n`` bytes in the largest decimal unit (kB, MB, GB, TB) of which it holds at least one,
    to one decimal; below 1 kB in bytes."""
    if n < 1000:
        return f"{n} bytes"
    for unit in ("kB", "MB", "GB"):
        n /= 1000
        if n < 999.95:  # what rounds to 1000.0 takes the next unit
            return f"{n:.1f} {unit}"
    return f"{n / 1000:,.1f} TB"
