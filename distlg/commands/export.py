"""Export a checkpoint as a model directory: the weights alone.

CHECKPOINT is a checkpoint directory (RUN/checkpoints/step-NNNNNNNN) or a run directory, whose
latest complete checkpoint is taken. Every partition is checked against the checkpoint's
checksums as it is read; the optimiser's state and the training section are left out; the
weights' shards are linked unchanged where they can be. Training already writes the final
model to RUN/model; export is for any other checkpoint, or for another format. OUT may be a
new local folder or a new s3:// prefix (`pip install 'distlg[s3]'`).

--quantize stores the weights in fewer bytes: fp16 (half the bytes; every weight within 2^-11
of itself) or int8 (codes times a scale per tensor, or per tensor and partition with --scale
per-partition; biases and the first layer's weights take two codes). Quantized shards are
zstd-compressed whole. The root document and the arrays' own Zarr metadata record what was
done, so any Zarr reader can decode them; crop, render, extend and info read them as they are.
"""

from __future__ import annotations

import argparse

QUANTIZE = ("fp16", "int8")
SCALES = ("per-tensor", "per-partition")

HELP = "convert a checkpoint into a model directory (weights only)"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", metavar="CHECKPOINT",
                   help="checkpoint directory, or a run directory (its latest checkpoint)")
    p.add_argument("out", metavar="OUT", help="new model directory (must not exist, or be empty), "
                   "or an s3:// URL with nothing under it")
    p.add_argument("--format", choices=("shards", "safetensors"), default="shards",
                   help="shards: format 2, blocks of partitions in a Zarr v3 group (default); "
                   "safetensors: format 1, one safetensors file per partition (local folders)")
    p.add_argument("--quantize", choices=QUANTIZE, default=None,
                   help="store the weights as float16, or as int8 codes with scales (default: "
                   "float32, as trained); the shards are then zstd-compressed")
    p.add_argument("--scale", choices=SCALES, default=None,
                   help="with --quantize int8: one scale per tensor for every partition "
                   "(default), or one per tensor and partition (more bytes, less error)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="show a progress bar (default: on)")


def run(args: argparse.Namespace) -> int:
    from ..modeldir.export import export, find_checkpoint
    from ..outputs import check_apart, exclusive, refuse_url
    from .info import stored_text, weights_text

    refuse_url(args.out, "OUT", writable=("s3",))
    source = find_checkpoint(args.checkpoint).path  # a run's latest: RUN/exported is fine
    check_apart(args.out, {"checkpoint": source}, "OUT")
    with exclusive(args.out, "OUT"):
        md = export(source, args.out, progress=args.progress, fmt=args.format,
                    quantize=args.quantize, scale=args.scale)
    print(f"exported {len(md.partition_ids)} partitions to {md.path}; {weights_text(md.params())}"
          + (f"; {stored_text(md)}" if getattr(md, "quantization", None) else ""))
    return 0
