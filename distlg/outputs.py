"""Where a command writes: a local path (never a URL it cannot write to), not inside what it
reads or another distlg folder, and one writer at a time.

- ``refuse_url``: an output given as a URL (``s3://``, ``https://``, ``gs://``, any
  ``scheme://``) is refused in one line before anything is written; a local ``Path`` would
  fold ``s3://bucket/x`` into the folder ``./s3:/bucket/x`` and report success.
- ``check_apart``: an output may not lie inside one of the command's inputs, nor an input
  inside the output, nor the output inside a signal store or a model directory (whose own
  commands replace or prune them: ``ingest --overwrite`` would delete a run written there).
- ``exclusive``: an exclusive lock on ``.NAME.lock`` beside the output (``filelock``: flock on
  POSIX) for as long as the command writes it, released on every exit path, the file removed
  then. A second writer is refused in one line. The kernel drops the lock of a process that
  dies, however it dies (kill -9 too), so a lock left by a dead command never blocks: the
  next one takes it (the empty file left behind is reused) and sweeps the dead one's staging
  folders.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

from .errors import DistlgError
from .staging import hidden_name, sweep_staging

_URL = re.compile(r"\A[A-Za-z][A-Za-z0-9+.-]*://")
MARKERS = ("zarr.json", "manifest.json")
"""Files whose presence makes a folder a store's or a model directory's own: a signal store is
a Zarr array, a model directory a Zarr group (format 2) or a folder with a manifest (format 1)."""


class OutputError(DistlgError):
    """An output that cannot be written as asked: a URL, inside an input, or being written."""


def is_url(path: str | Path) -> bool:
    """Whether ``path`` is written as ``scheme://...``."""
    return bool(_URL.match(str(path)))


def refuse_url(path: str | Path, what: str = "output", writable: tuple[str, ...] = ()) -> None:
    """One line, before anything is written, when ``path`` is a URL whose scheme is not one of
    ``writable`` (those the command writes itself, e.g. ``s3``)."""
    if is_url(path):
        scheme = str(path).split("://", 1)[0]
        if scheme.lower() in writable:
            return
        where = " or ".join([*(f"{s}://" for s in writable), "local paths"])
        raise OutputError(f"{what} {path} is a URL: this command writes to {where}, not to "
                          f"{scheme}://; write to a local path and copy it there")


def _inside(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _owner(path: Path) -> tuple[Path, str] | None:
    """The nearest folder at or above ``path`` that is a signal store or a model directory."""
    for folder in (path, *path.parents):
        for marker in MARKERS:
            if (folder / marker).is_file():
                return folder, _kind(folder / marker)
    return None


def _kind(marker: Path) -> str:
    """What the folder holding ``marker`` is, in words."""
    if marker.name == "manifest.json":
        return "a model directory"
    try:
        doc = json.loads(marker.read_text())
    except (OSError, ValueError):
        doc = {}
    node = doc.get("node_type") if isinstance(doc, dict) else None
    return {"array": "a signal store", "group": "a model directory"}.get(node, "a Zarr store")


def check_apart(out: str | Path, inputs: Mapping[str, str | Path | None], what: str = "output",
                itself: bool = False) -> None:
    """Refuse ``out`` inside an input (``inputs``: a name for each input path; URLs, built-in
    signals and None are skipped) or an input inside ``out``, and ``out`` inside a store or a
    model directory (``itself``: or being one)."""
    if is_url(out):
        return
    target = Path(out).resolve()
    for name, given in inputs.items():
        if given is None or is_url(given) or str(given).startswith("builtin:"):
            continue
        source = Path(given).resolve()
        if _inside(target, source) or _inside(source, target):
            where = "is" if target == source else (
                "lies inside" if _inside(target, source) else "holds")
            raise OutputError(f"{what} {out} {where} the {name} {given}; write it elsewhere")
    owner = _owner(target if itself else target.parent)
    if owner is not None:
        folder, kind = owner
        where = f"is {kind}" if folder == target else f"lies inside {kind} ({folder})"
        raise OutputError(f"{what} {out} {where}; write it elsewhere")


def lock_path(path: str | Path) -> Path:
    """The lock file of the output ``path``: ``.NAME.lock`` beside it."""
    path = Path(path)
    return path.parent / hidden_name(path, ".lock")


class _Replaced(Exception):
    """The lock file was unlinked by its last holder between our open and our lock."""


@contextmanager
def exclusive(path: str | Path, what: str = "output") -> Iterator[None]:
    """Hold ``path``'s lock while the block runs (refused in one line if another process
    holds it); staging folders that dead writers of ``path`` left are removed once held. A URL
    (object storage) has no lock: nothing is held there.

    The lock file is removed on release, while still locked; a process that opened it just
    before then holds an unlinked file, which ``pin`` notices (the path no longer names it),
    so it refuses as if the lock were held: two holders can never both believe they hold it."""
    from filelock import FileLock, Timeout

    if is_url(path):
        yield
        return
    path = Path(path)
    lock_file = lock_path(path)
    held: list[os.stat_result] = []

    def pin(fd: int) -> None:
        mine = os.fstat(fd)
        try:
            named = os.lstat(lock_file)
        except FileNotFoundError:
            raise _Replaced from None
        if mine.st_nlink == 0 or not os.path.samestat(mine, named):
            raise _Replaced
        held.append(mine)

    lock = FileLock(str(lock_file), timeout=0, on_acquired=pin)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except (Timeout, _Replaced):
        raise OutputError(f"{what} {path} is being written by another distlg command (it holds "
                          f"{lock_file.name} beside it); wait for it to finish or choose another "
                          "name") from None
    except OSError as exc:
        raise OutputError(f"cannot write into {path.parent}: {exc.strerror or exc}") from None
    try:
        sweep_staging(path)
        yield
    finally:
        with contextlib.suppress(OSError):
            if os.path.samestat(held[0], os.lstat(lock_file)):
                lock_file.unlink()
        lock.release()
