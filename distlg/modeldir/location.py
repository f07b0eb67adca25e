"""Where a model directory's objects live: a local folder, or a URL (``https://`` read-only,
``s3://`` read and written), addressed by key (``zarr.json``, ``local/c/0/1/0``).

Local folders are read and written as files: whole objects, byte ranges (``pread``) and
atomic writes (a hidden temporary beside the key, renamed into place). URLs go through the same
store layer as signal stores (``distlg.data.remote``: zarr's fsspec stores with timeouts and
retries), with byte-range requests; many ranges are fetched concurrently. Nothing here knows
what the objects mean.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence

from ..data import remote
from ..errors import DistlgError


class LocationError(DistlgError):
    """A model directory's location that cannot be read or written as asked."""


class Location:
    """A local folder or a URL holding a model directory's objects."""

    def __init__(self, spec: str | Path, writable: bool = False):
        self.spec = str(spec)
        self.url = remote.is_url(spec)
        self.writable = writable
        if self.url:
            if writable:
                remote.check_writable(self.spec)
            self.store = remote.url_store(self.spec, writable=writable)
            self.path: Path | None = None
        else:
            self.store = None
            self.path = Path(spec)

    def __str__(self) -> str:
        return self.spec

    def child(self, name: str) -> "Location":
        """The location of a folder (prefix) inside this one."""
        joined = f"{self.spec.rstrip('/')}/{name}" if self.url else self.path / name
        return Location(joined, self.writable)

    # -- reading -----------------------------------------------------------------------------
    def _file(self, key: str) -> Path:
        """The local file of ``key``; a link leading outside the folder is refused (objects
        are read by fixed keys: a link could point anywhere)."""
        path = self.path / key
        if path.is_symlink():
            root = os.path.realpath(self.path)
            if not os.path.realpath(path).startswith(root + os.sep):
                raise LocationError(f"{path} is a link leading outside the model directory; "
                                    "refusing it")
        return path

    def read(self, key: str) -> bytes | None:
        """The whole object ``key``, or None where there is none."""
        if self.url:
            return self._fetch([(key, None)])[0]
        try:
            return self._file(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes] | None:
        """Byte ranges ``[start, stop)`` of object ``key`` (fetched concurrently from a URL);
        None where there is no such object."""
        if self.url:
            got = self._fetch([(key, r) for r in ranges])
            return None if any(g is None for g in got) else got
        try:
            fd = os.open(self._file(key), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        try:
            return [os.pread(fd, stop - start, start) for start, stop in ranges]
        finally:
            os.close(fd)

    def read_suffix(self, key: str, size: int) -> bytes | None:
        """The last ``size`` bytes of object ``key`` (all of it if shorter), or None."""
        if self.url:
            return self._fetch([(key, -size)])[0]
        try:
            with open(self._file(key), "rb") as fh:
                fh.seek(0, os.SEEK_END)
                fh.seek(max(0, fh.tell() - size))
                return fh.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def exists(self, key: str) -> bool:
        if self.url:
            from zarr.core.sync import sync

            return sync(self.store.exists(key))
        return (self.path / key).is_file()

    def _fetch(self, requests: Iterable[tuple[str, tuple[int, int] | int | None]]) -> list[bytes | None]:
        """Objects or ranges of them from a URL, concurrently: (key, None) whole, (key, (a, b))
        a range, (key, -n) the last n bytes."""
        import asyncio

        from zarr.abc.store import RangeByteRequest, SuffixByteRequest
        from zarr.core.buffer import default_buffer_prototype
        from zarr.core.sync import sync

        def request(spec):
            if spec is None:
                return None
            if isinstance(spec, int):
                return SuffixByteRequest(-spec)
            return RangeByteRequest(*spec)

        async def fetch_all():
            proto = default_buffer_prototype()
            calls = [self.store.get(key, proto, request(spec)) for key, spec in requests]
            return await asyncio.gather(*calls)

        return [None if b is None else b.to_bytes() for b in sync(fetch_all())]

    # -- writing -----------------------------------------------------------------------------
    def write(self, key: str, data: bytes, sync_to_disk: bool = False) -> None:
        """Write object ``key`` whole: readers see the old object or the new one, never part
        (a local file is written beside its name and renamed; ``sync_to_disk`` fsyncs it)."""
        if not self.writable:
            raise LocationError(f"{self.spec} is opened read-only")
        if self.url:
            from zarr.core.buffer import default_buffer_prototype
            from zarr.core.sync import sync

            sync(self.store.set(key, default_buffer_prototype().buffer.from_bytes(data)))
            return
        path = self.path / key
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "wb") as fh:
            fh.write(data)
            if sync_to_disk:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)

    def delete(self, key: str) -> None:
        if self.url:
            from zarr.core.sync import sync

            sync(self.store.delete(key))
            return
        (self.path / key).unlink(missing_ok=True)

    def link(self, source: "Location", key: str) -> None:
        """Object ``key`` of ``source`` here, unchanged: a hard link between local folders
        (objects are only ever replaced, never modified in place), else a copy."""
        if not (self.url or source.url):
            target = self.path / key
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source.path / key, target)
                return
            except OSError:
                pass
        data = source.read(key)
        if data is None:
            raise LocationError(f"{source}: object {key} is missing")
        self.write(key, data)

    def sync_folder(self) -> None:
        """Make the renames in this local folder and its subfolders durable (one fsync each),
        not one fsync per file."""
        if self.url or self.path is None or not self.path.is_dir():
            return
        for folder, _, _ in os.walk(self.path):
            fd = os.open(folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def zarr_store(self):
        """A zarr store over this location (for the small arrays zarr itself reads/writes)."""
        if self.url:
            return self.store
        from zarr.storage import LocalStore

        return LocalStore(self.path, read_only=not self.writable)
