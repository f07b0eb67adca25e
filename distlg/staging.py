"""Outputs written aside: a hidden folder beside the output name, moved into place on success.

Model-directory edits and renders both build their output in such a folder, so nothing
half-written ever appears under the name a user asked for.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from .errors import DistlgError


def staging_folder(path: Path, error: type[DistlgError]) -> Path:
    """A new hidden folder ``.NAME.*.partial`` beside ``path`` (its parent created);
    ``error`` with one line when the parent cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    except OSError as exc:
        raise error(f"cannot write into {path.parent}: {exc.strerror}") from None
