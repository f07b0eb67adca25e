"""Where an edit (export, crop, extend) writes: a new local folder built aside and moved into
place, or a new prefix at an ``s3://`` URL written object by object with its root document
last (so a reader never takes a half-written output for a model). Either must not hold anything
yet; an ``https://`` output is refused (read-only)."""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..data import remote
from ..staging import staging_folder
from .base import ModelDir
from .format import ModelDirError, staged_directory
from .location import Location


@contextmanager
def output(out: str | Path, source: ModelDir | None = None) -> Iterator[Location]:
    """A writable ``Location`` for the new model directory ``out``."""
    if remote.is_url(out):
        try:
            remote.check_writable(str(out))
            empty = remote.is_empty(str(out))
        except remote.RemoteError as exc:
            raise ModelDirError(str(exc)) from None
        if not empty:
            raise ModelDirError(f"{out} already holds objects; choose a new prefix")
        location = Location(out, writable=True)
        try:
            yield location
        except BaseException:
            _remove_partial(location)
            raise
        return
    src = source.location.path if source is not None else None
    with staged_directory(out, src) as staging:
        yield Location(staging, writable=True)


def _remove_partial(location: Location) -> None:
    """Delete what an interrupted write left under a URL (its root was never written)."""
    try:
        remote.delete(location.spec)
    except Exception:  # the network is what failed: leave it, it holds no root document
        pass


@contextmanager
def in_place(model: ModelDir) -> Iterator[Location]:
    """A writable ``Location`` for the new version of ``model`` (a local folder): built aside,
    then swapped with the old one (two renames), which is removed; until the swap the old model
    is untouched, so an interrupted edit loses nothing."""
    if model.location.path is None:
        raise ModelDirError(f"{model.path}: --in-place edits local model directories; write the "
                            "result to a new output instead")
    path = model.location.path
    staging = staging_folder(path, ModelDirError)
    try:
        yield Location(staging, writable=True)
        old = staging.with_name(staging.name.replace(".partial", ".old"))
        os.rename(path, old)
        os.rename(staging, path)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
