"""Outputs written aside: a hidden folder beside the output name, moved into place on success.

Model-directory edits, packs and renders build their output in such a folder, so nothing
half-written ever appears under the name a user asked for.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import DistlgError


def staging_folder(path: Path, error: type[DistlgError]) -> Path:
    """A new hidden folder ``.NAME.*.partial`` beside ``path`` (its parent created);
    ``error`` with one line when the parent cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    except OSError as exc:
        raise error(f"cannot write into {path.parent}: {exc.strerror}") from None


@contextmanager
def staged(path: Path, error: type[DistlgError]) -> Iterator[Path]:
    """Build the new folder ``path`` in a staging folder beside it: moved to ``path`` (an empty
    folder there is replaced) with the permissions a new folder gets when the block ends,
    removed if it raises."""
    staging = staging_folder(path, error)
    try:
        yield staging
        umask = os.umask(0o022)
        os.umask(umask)
        staging.chmod(0o777 & ~umask)  # mkdtemp's folder is private; the output is not
        if path.is_dir():
            path.rmdir()
        os.rename(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
