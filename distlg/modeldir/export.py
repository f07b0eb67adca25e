"""Export: a checkpoint as a model directory holding the weights alone.

A checkpoint keeps Adam's moments beside every partition's weights and a ``training`` section
in its manifest; the exported model drops both. Files are converted one partition at a time,
each checked against its sha256 as it is read, so memory stays at one partition's tensors.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm.auto import tqdm

from .format import (
    GLOBAL_FILE,
    MANIFEST,
    OPTIM_PREFIX,
    ModelDir,
    ModelDirError,
    manifest_for,
    partition_file,
    staged_directory,
    write_manifest,
    write_tensors,
)
from .runs import latest


def find_checkpoint(path: str | Path) -> ModelDir:
    """``path`` itself if it holds a manifest, else the latest complete checkpoint of the run
    directory ``path``."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return ModelDir.open(path)
    found = latest(path)
    if found is None:
        raise ModelDirError(f"{path} is neither a checkpoint nor a run directory with a complete "
                            "checkpoint")
    return ModelDir.open(found)


def _weights(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in tensors.items() if not k.startswith(OPTIM_PREFIX)}


def export(source: str | Path, out: str | Path, progress: bool = False) -> ModelDir:
    """Write the weights of checkpoint ``source`` (or a run directory's latest) to the new
    model directory ``out`` (built beside it and moved into place when complete)."""
    src = find_checkpoint(source)
    if Path(out).resolve() == src.path.resolve():
        raise ModelDirError(f"{out} is the checkpoint itself; export it to a new directory")
    with staged_directory(out, src.path) as staging:
        entries = []
        for pid, entry in tqdm(src.entries.items(), unit="partition", disable=None if progress else True):
            tensors = _weights(src.read(entry))
            entries.append({"id": pid, **write_tensors(staging, partition_file(pid), tensors,
                                                       {"partition": str(pid)})})
        global_entry = write_tensors(staging, GLOBAL_FILE, _weights(src.read_global()))
        write_manifest(staging, manifest_for(src.grid, src.arch, src.signal, global_entry, entries))
    return ModelDir.open(out)
