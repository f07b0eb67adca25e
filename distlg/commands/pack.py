"""Pack a signal store for streaming: one sequence of tar shards per worker.

With --pack, the streaming sampler of `distlg train` reads each window as one long sequential
read of its worker's tar shards (webdataset format) instead of one read per store chunk:
what suits object storage, or a store on a slow disk. The pack holds each worker's chunks in
exactly the order its sampler visits them, so it is made for one partition grid and one number
of workers: give the same --workers, and the same grid options as the training run (the
defaults match a default run). OUT must not exist; it appears only once the pack is whole.

    distlg pack storage/signals/bikes.zarr storage/packs/bikes-4 --workers 4
    accelerate launch --num_processes 4 -m distlg train --signal storage/signals/bikes.zarr \\
        --pack storage/packs/bikes-4 --sample-fraction 0.01
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from ..config import PartitionConfig
from ..defaults import Arch
from ..flags import add_fields, given

HELP = "write a store's chunks as per-worker tar shards that `distlg train --pack` streams"


@dataclass
class PackOptions:
    workers: int = 1
    """Workers of the training runs that will read the pack (each gets its own shards)."""
    shard_mb: float = 256.0
    """Size of each tar shard in MB (a worker's chunks span as many shards as they need)."""
    arch: Arch = "local-global"
    """Model family of the training runs (one SIREN or INCODE network has one partition and no
    halo)."""
    progress: bool = True
    """Show a progress bar (on a terminal)."""


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("store", metavar="STORE", help="signal store written by `distlg ingest`")
    p.add_argument("out", metavar="OUT", help="folder to write the pack to (must not exist)")
    add_fields(p.add_argument_group("the training runs the pack is for"), PackOptions,
               names=("workers", "arch"))
    add_fields(p.add_argument_group("partition grid (the same options as `distlg train`)"),
               PartitionConfig)
    add_fields(p.add_argument_group("output"), PackOptions, names=("shard_mb", "progress"))


def run(args: argparse.Namespace) -> int:
    import time

    from ..config import Config, ConfigError
    from ..data.pack import write_pack
    from ..data.store import open_store
    from ..modeldir.shards import owners
    from ..outputs import check_apart, exclusive, refuse_url
    from ..training.plan import make_grid

    refuse_url(args.out, "OUT")
    check_apart(args.out, {"store": args.store}, "OUT")
    options = PackOptions(**given(args, PackOptions))
    if not options.shard_mb > 0:
        raise ConfigError(f"--shard-mb must be > 0, got {options.shard_mb}")
    config = Config().replace(arch=options.arch, **given(args, PartitionConfig))
    signal = open_store(args.store)
    grid = make_grid(config, signal)
    t0 = time.perf_counter()
    with exclusive(args.out, "OUT"):
        manifest = write_pack(signal, grid, owners(grid, options.workers)[1], args.out,
                              int(options.shard_mb * 1e6), options.progress)
    files = [f for s in manifest["shards"] for f in s["files"]]
    size = sum(f["bytes"] for f in files)
    print(f"{args.out}: {sum(s['chunks'] for s in manifest['shards'])} chunks of "
          f"{'x'.join(map(str, manifest['chunks']))} in {len(files)} tar shard(s), "
          f"{size / 1e6:,.1f} MB, for {options.workers} worker(s) and grid "
          f"{'x'.join(map(str, grid.factors))} (halo {'x'.join(map(str, grid.overlaps))}) "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0
