"""Export: a checkpoint as a model directory holding the weights alone.

A checkpoint keeps Adam's moments beside the weights and a ``training`` section in its
manifest; the exported model drops both. From a version-2 checkpoint the weights' shards are
checked and then linked unchanged (export costs reading them once); ``--format safetensors``
writes one file per partition (format version 1) instead. The output is built aside and moved
into place when complete; a URL output (``s3://``) is written object by object, its root
document last.
"""

from __future__ import annotations

from pathlib import Path

from .format import ModelDir, ModelDirError
from .output import output
from .quantize import Quantization, QuantizeError, check_options
from .rewrite import write_subset
from .runs import is_complete, latest


def find_checkpoint(path: str | Path) -> ModelDir:
    """``path`` itself if it is a model directory or checkpoint, else the latest complete
    checkpoint of the run directory ``path``."""
    if "://" in str(path) or is_complete(Path(path)):
        return ModelDir.open(path)
    found = latest(path)
    if found is None:
        raise ModelDirError(f"{path} is neither a checkpoint nor a run directory with a complete "
                            "checkpoint")
    return ModelDir.open(found)


def export(source: str | Path, out: str | Path, progress: bool = False,
           fmt: str = "shards", quantize: str | None = None, scale: str | None = None) -> ModelDir:
    """Write the weights of checkpoint ``source`` (or a run directory's latest) to the new
    model directory ``out``, as shards (format 2) or one file per partition (``safetensors``);
    ``quantize`` (``fp16``, ``int8``, with ``scale`` per-tensor or per-partition) stores them in
    fewer bytes (``quantize``). Bad options are refused before anything is read or written."""
    check_options(quantize, scale)
    if quantize is not None and fmt != "shards":
        raise QuantizeError("--quantize writes format 2 (shards); leave out --format safetensors")
    src = find_checkpoint(source)
    here = src.location.path
    if here is not None and "://" not in str(out) and Path(out).resolve() == here.resolve():
        raise ModelDirError(f"{out} is the checkpoint itself; export it to a new directory")
    if quantize is not None and getattr(src, "quantization", None) is not None:
        raise QuantizeError(f"{src.path} is quantized already ({src.quantization.name}); export "
                            "its checkpoint instead, or leave out --quantize to copy it")
    asked = Quantization.asked(quantize, scale) if quantize is not None else None
    with output(out, src) as location:
        write_subset(src, location, src.present, fmt, progress, asked)
    return ModelDir.open(out)
