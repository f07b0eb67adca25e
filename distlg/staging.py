"""Outputs written aside: a hidden folder beside the output name, moved into place on success.

Model-directory edits, packs and renders build their output in such a folder, so nothing
half-written ever appears under the name a user asked for. Hidden names beside an output
(``hidden_name``) are shortened to fit the file system's 255 bytes, so an output whose own
name is near that limit can still be staged, locked and swapped.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import DistlgError

NAME_MAX = 255
"""Bytes in one file name on the usual file systems (ext4, xfs, btrfs, tmpfs, APFS)."""
RESERVE = 24
"""Bytes a hidden name keeps free after its stem (``.XXXXXXXX.partial``, ``.lock``, ...)."""


def hidden_name(path: Path, suffix: str) -> str:
    """``.NAME{suffix}`` for the output ``path``; when that would not fit in ``NAME_MAX`` bytes,
    NAME is cut and a digest of the whole name added, so distinct outputs keep distinct names.
    The same path always gives the same name."""
    name = path.name
    if len((f".{name}" + suffix).encode()) <= NAME_MAX - RESERVE:
        return f".{name}{suffix}"
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    keep = NAME_MAX - RESERVE - len(suffix.encode()) - len(digest) - 3
    stem = name.encode()[:keep].decode(errors="ignore")
    return f".{stem}~{digest}{suffix}"


def staging_prefix(path: Path) -> str:
    """What every staging folder of ``path`` starts with (they end in ``.partial``)."""
    return hidden_name(path, ".")


def staging_folder(path: Path, error: type[DistlgError]) -> Path:
    """A new hidden folder ``.NAME.*.partial`` beside ``path`` (its parent created);
    ``error`` with one line when the parent cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=staging_prefix(path), suffix=".partial",
                                     dir=path.parent))
    except OSError as exc:
        raise error(f"cannot write into {path.parent}: {exc.strerror}") from None


def sweep_staging(path: Path) -> list[Path]:
    """Remove the staging folders of ``path`` that earlier writers left (killed outright, so
    their cleanup never ran); returns them. Only safe while holding ``path``'s lock
    (``distlg.outputs.exclusive``): no live writer of ``path`` can then be using one."""
    prefix = staging_prefix(path)
    found = [p for p in path.parent.glob("*.partial") if p.name.startswith(prefix)] \
        if path.parent.is_dir() else []
    for stale in found:
        shutil.rmtree(stale, ignore_errors=True)
    return found


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
