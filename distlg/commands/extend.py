"""Extend a model to samples appended to its signal (e.g. frames after the last one).

SIGNAL is the whole signal: the model's samples followed by the new ones along the first axis
(frames, rows, samples, slices); the other axes, kind, channels and value range must match.
The partition grid is continued along the first axis with partitions of the same size; only
the new partitions' local sub-networks train, from fresh initialisations, against the model's
global branch, which stays frozen. The result is one model covering both parts, in a new
directory OUT (the old shards or files hard-linked) or --in-place; the old part renders exactly as
before. The model's last partition along the first axis must not be padded.

Runs in one process (not under accelerate launch), with the trainer's step loop and its
defaults for the signal's kind; as only the new partitions train, more steps than the original
run cost little.
"""

from __future__ import annotations

import argparse

from ..config import ExtendConfig
from ..flags import add_fields, given

HELP = "encode samples appended to a signal by new partitions (one process)"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="model directory to extend")
    p.add_argument("out", metavar="OUT", nargs="?",
                   help="new directory for the extended model (must not exist, or be empty)")
    p.add_argument("--in-place", action="store_true",
                   help="add the new partitions to MODEL itself (the new version is built "
                   "beside it, then swapped in)")
    p.add_argument("--signal", required=True, metavar="STORE",
                   help="the whole signal, old and new samples (a Zarr store written by "
                   "`distlg ingest`: a path, or an https:// or s3:// URL)")
    add_fields(p.add_argument_group("training the new partitions"), ExtendConfig)


def run(args: argparse.Namespace) -> int:
    import os

    import torch

    from ..data.store import open_signal
    from ..errors import DistlgError
    from ..outputs import check_apart, exclusive, refuse_url
    from ..training.extend import extend
    from .info import weights_text

    if (args.out is None) == (not args.in_place):
        raise DistlgError("give either OUT or --in-place")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise DistlgError("extend runs in one process: start it as `distlg extend ...`, not under "
                          "accelerate launch or torchrun")
    if args.out is not None:
        refuse_url(args.out, "OUT", writable=("s3",))
        check_apart(args.out, {"model": args.model, "signal": args.signal}, "OUT")
    settings = ExtendConfig(**given(args, ExtendConfig))
    if settings.threads:
        torch.set_num_threads(settings.threads)
    with exclusive(args.out or args.model, "OUT" if args.out else "MODEL"):
        r = extend(args.model, open_signal(args.signal), args.out, settings)
    print(f"added partitions {r.new_partitions[0]}-{r.new_partitions[-1]} ({len(r.new_partitions)}), "
          f"trained {r.steps} steps in {r.seconds:.1f} s; PSNR of the new region "
          f"{r.psnr:.2f} dB; model in {r.path}")
    print(f"weights before: {weights_text(r.params_before)}")
    print(f"weights after:  {weights_text(r.params_after)}")
    return 0
