"""Extend a model to samples appended to its signal (e.g. frames after the last one).

SIGNAL is the whole signal: the model's samples followed by the new ones along the first axis
(frames, rows, samples, slices); the other axes, kind, channels and value range must match.
The partition grid is continued along the first axis with partitions of the same size; only
the new partitions' local sub-networks train, from fresh initialisations, against the model's
global branch, which stays frozen. The result is one model covering both parts, in a new
directory OUT (the old files hard-linked) or --in-place; the old part renders exactly as
before. The model's last partition along the first axis must not be padded.

Runs in one process (not under accelerate launch). Training defaults are the trainer's for the
signal's kind; as only the new partitions train, more steps than the original run cost little.
"""

from __future__ import annotations

import argparse

HELP = "encode samples appended to a signal by new partitions (one process)"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="model directory to extend")
    p.add_argument("out", metavar="OUT", nargs="?",
                   help="new directory for the extended model (must not exist, or be empty)")
    p.add_argument("--in-place", action="store_true",
                   help="add the new partitions to MODEL itself (new files, then the manifest)")
    p.add_argument("--signal", required=True, metavar="STORE",
                   help="the whole signal, old and new samples (a Zarr store written by "
                   "`distlg ingest`)")
    p.add_argument("--steps", type=int, metavar="N",
                   help="optimisation steps (default: 2000 images, 1000 audio, 1500 otherwise)")
    p.add_argument("--lr", type=float, metavar="X",
                   help="Adam learning rate (default: 5e-4 images, 1e-4 otherwise)")
    p.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                   help="learning-rate schedule (default: constant)")
    p.add_argument("--lr-final", type=float, default=0.05, metavar="X",
                   help="final learning rate of the cosine schedule, as a fraction of --lr "
                   "(default: 0.05)")
    p.add_argument("--samples-per-partition", type=int, metavar="N",
                   help="samples drawn from each new partition per step (default: 2 %% of a "
                   "partition for video and volumes, every position for images and audio)")
    p.add_argument("--seed", type=int, default=0, help="seed of the new partitions (default: 0)")
    p.add_argument("--memory-budget-gib", type=float, default=4.0, metavar="X",
                   help="signal data the sampler may hold in memory (default: 4)")
    p.add_argument("--device", default="cpu", help="device to train on (default: cpu)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: torch's)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="show a progress bar (default: on)")


def run(args: argparse.Namespace) -> int:
    import torch

    from ..data.signal import open_signal
    from ..errors import DistlgError
    from ..modeldir.extend import ExtendSettings, extend
    from .info import weights_text

    if (args.out is None) == (not args.in_place):
        raise DistlgError("give either OUT or --in-place")
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = ExtendSettings(
        steps=args.steps, lr=args.lr, samples_per_partition=args.samples_per_partition,
        schedule=args.schedule, lr_final=args.lr_final, seed=args.seed,
        memory_budget_gib=args.memory_budget_gib, device=args.device, progress=args.progress)
    r = extend(args.model, open_signal(args.signal), args.out, settings)
    print(f"added partitions {r.new_partitions[0]}-{r.new_partitions[-1]} ({len(r.new_partitions)}), "
          f"trained {r.steps} steps in {r.seconds:.1f} s; PSNR of the new region "
          f"{r.psnr:.2f} dB; model in {r.path}")
    print(f"weights before: {weights_text(r.params_before)}")
    print(f"weights after:  {weights_text(r.params_after)}")
    return 0
