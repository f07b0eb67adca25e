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
           fmt: str = "shards") -> ModelDir:
    """Write the weights of checkpoint ``source`` (or a run directory's latest) to the new
    model directory ``out``, as shards (format 2) or one file per partition (``safetensors``)."""
    src = find_checkpoint(source)
    here = src.location.path
    if here is not None and "://" not in str(out) and Path(out).resolve() == here.resolve():
        raise ModelDirError(f"{out} is the checkpoint itself; export it to a new directory")
    with output(out, src) as location:
        write_subset(src, location, src.present, fmt, progress)
    return ModelDir.open(out)
