"""Model directories: how one is opened, and the rules every edit of one follows.

Two formats (storage/README.md): version 2, a Zarr v3 group whose unit on disk is a shard of
partitions (``sharded``, ``writer``: what distlg writes), and version 1, one safetensors file
per partition (``files``: still read, and written by ``distlg export --format safetensors``).
``ModelDir.open`` reads either; both answer the same questions (``base.ModelDir``).

An edit (export, crop, extend) builds its output aside and moves it into place when complete
(``staged_directory``), so nothing half-written appears under the name asked for; an output
that exists is refused.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..staging import staged
from . import files, sharded  # noqa: F401  (each registers its format with ModelDir)
from .base import ModelDir
from .manifest import FORMAT, MAX_PARTITIONS, ModelDirError, id_ranges

__all__ = ["FORMAT", "MAX_PARTITIONS", "ModelDir", "ModelDirError", "check_new_directory",
           "id_ranges", "new_directory", "staged_directory"]


def check_new_directory(path: str | Path, source: Path | None = None) -> Path:
    """Refuse an edit's output directory unless it does not exist yet, or is empty (one line
    that says whether it is the model, a file or a folder with files in it)."""
    path = Path(path)
    if source is not None and path.resolve() == source.resolve():
        raise ModelDirError(f"{path} is the model itself; use --in-place to change it there")
    if path.exists() and not path.is_dir():
        raise ModelDirError(f"{path} is a file, not a directory; choose a new directory")
    if path.exists() and any(path.iterdir()):
        raise ModelDirError(f"{path} already exists and is not empty; choose a new directory")
    return path


def new_directory(path: str | Path, source: Path | None = None) -> Path:
    """Create the output directory of an edit: it must not exist yet, or be empty."""
    path = check_new_directory(path, source)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def staged_directory(path: str | Path, source: Path | None = None) -> Iterator[Path]:
    """A hidden folder beside ``path`` (checked as ``new_directory`` checks it) to build an
    edit's output in: moved to ``path`` when the block ends, removed if it raises, so nothing
    half-written ever appears under ``path``."""
    with staged(check_new_directory(path, source), ModelDirError) as staging:
        yield staging

