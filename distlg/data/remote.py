"""Stores read over HTTP(S): ``open_signal("https://host/clip.zarr")``, read-only.

This module owns the transport, not the store format: ``http_store(url)`` gives a Zarr store
object for the URL, which ``distlg.data.store`` opens and checks like a local path. Reads go
through zarr's fsspec support (fsspec's HTTP filesystem, on aiohttp: ``pip install
'distlg[remote]'``), wrapped in ``RetryingStore``:

- every request has a total timeout (``TIMEOUT_S``), so a read never hangs;
- transient failures (5xx answers, refused or reset connections, timeouts) are retried
  ``TRIES`` times with exponential backoff from ``BACKOFF_S``; then, and on any other failure,
  a one-line ``RemoteError`` names the URL and the key (``zarr.json`` or a chunk such as
  ``c/0/1/0``); it surfaces where the samplers read (``Signal.read``);
- at most ``CONCURRENCY`` requests are in flight per store, and zarr's ``async.concurrency``
  (how many chunks one slice fetches at once) is raised to that when a URL is opened.

A 404 for a chunk is a chunk that was never written (all fill value), as for a local store.
A sharded store is read in byte ranges of its shards (the index at the end, then each chunk);
a server that ignores Range headers and sends the whole object (Python's ``http.server``
does; object stores and common web servers do not) is still read right: the range is cut out
here, at the cost of fetching whole shards.
s3:// and other schemes, and writing remote stores, are not supported. Nothing here imports
torch.
"""

from __future__ import annotations

import asyncio
import atexit

import zarr
from zarr.storage import WrapperStore

from .signal import StoreError

SCHEMES = ("http://", "https://")
TIMEOUT_S = 30.0
"""Total time allowed for one request (connecting, headers and body)."""
TRIES = 5
BACKOFF_S = 0.2
"""Wait before the second try; it doubles before each further one (0.2 + 0.4 + 0.8 + 1.6 s)."""
CONCURRENCY = 32
"""Requests in flight per store at most, and chunks the streaming sampler reads ahead of use
(``stream.read_ahead``): at 100 ms a request, 32 chunks of ~250 KB (compressed video) in
flight move ~80 MB/s."""
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class RemoteError(StoreError):
    """A remote store that cannot be read: unreachable, failing, or without the extra."""


def is_url(spec: object) -> bool:
    """Whether ``spec`` names a store by an http:// or https:// URL."""
    return str(spec).lower().startswith(SCHEMES)


def _reason(exc: BaseException) -> str:
    """What went wrong with a request, in a few words on one line."""
    import aiohttp

    if isinstance(exc, aiohttp.ClientResponseError):
        return f"HTTP {exc.status} {exc.message}"
    if isinstance(exc, asyncio.TimeoutError):
        return f"no complete answer within {TIMEOUT_S:g} s"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def transient(exc: BaseException) -> bool:
    """Whether a failed request is worth trying again."""
    import aiohttp

    if isinstance(exc, aiohttp.ClientResponseError):
        return exc.status in RETRY_STATUS
    return isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError))


class RetryingStore(WrapperStore):
    """A read-only Zarr store that retries transient read failures and names what failed."""

    def __init__(self, store, url: str):
        super().__init__(store)
        self.url = url
        self._slots = asyncio.Semaphore(CONCURRENCY)

    def _with_store(self, store) -> "RetryingStore":
        return type(self)(store, self.url)

    async def _retry(self, key: str, call, *args):
        """``call(*args)``, tried again after transient failures; ``key`` names what it reads."""
        import aiohttp

        delay = BACKOFF_S
        for attempt in range(1, TRIES + 1):
            try:
                async with self._slots:
                    return await call(*args)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                if not transient(exc) or attempt == TRIES:
                    tries = f" after {attempt} tries" if attempt > 1 else ""
                    raise RemoteError(f"could not read {key} of {self.url}{tries} "
                                      f"({_reason(exc)})") from exc
            await asyncio.sleep(delay)
            delay *= 2

    async def get(self, key, prototype, byte_range=None):
        return _cut(await self._retry(key, self._store.get, key, prototype, byte_range), byte_range)

    async def get_partial_values(self, prototype, key_ranges):
        key_ranges = list(key_ranges)
        keys = ", ".join(sorted({k for k, _ in key_ranges}))
        found = await self._retry(keys, self._store.get_partial_values, prototype, key_ranges)
        return [_cut(buffer, byte_range) for buffer, (_, byte_range) in zip(found, key_ranges)]

    async def exists(self, key: str) -> bool:
        return await self._retry(key, self._store.exists, key)


def _cut(buffer, byte_range):
    """``buffer`` cut to ``byte_range`` where the server ignored the Range header and answered
    with the whole object (longer than asked for)."""
    from zarr.abc.store import RangeByteRequest, SuffixByteRequest

    if buffer is None:
        return None
    if isinstance(byte_range, RangeByteRequest) and len(buffer) > byte_range.end - byte_range.start:
        return buffer[byte_range.start:byte_range.end]
    if isinstance(byte_range, SuffixByteRequest) and len(buffer) > byte_range.suffix:
        return buffer[len(buffer) - byte_range.suffix:]
    return buffer


def http_store(url: str) -> RetryingStore:
    """A read-only Zarr store for the store at ``url`` (http:// or https://)."""
    url = url.rstrip("/")
    try:
        import aiohttp
        from fsspec.core import url_to_fs
        from zarr.storage import FsspecStore
    except ImportError:
        scheme = url.split("://", 1)[0].lower()
        raise RemoteError(f"reading {scheme}:// stores needs `pip install 'distlg[remote]'`") from None
    # fsspec keeps one filesystem, and so one aiohttp session, per set of options: every store
    # shares it, and it is closed at exit (aiohttp warns about sessions left open).
    fs, path = url_to_fs(url, asynchronous=True,
                         client_kwargs={"timeout": aiohttp.ClientTimeout(total=TIMEOUT_S)})
    if not _SESSIONS:
        atexit.register(_close_sessions)
    _SESSIONS.add(fs)
    if zarr.config.get("async.concurrency") < CONCURRENCY:
        zarr.config.set({"async.concurrency": CONCURRENCY})
    return RetryingStore(FsspecStore(fs, path=path, read_only=True), url)


_SESSIONS: set = set()
"""The HTTP filesystems opened, whose sessions ``_close_sessions`` closes at exit."""


def _close_sessions() -> None:
    """Close the aiohttp sessions on zarr's event loop (this runs before zarr stops it)."""
    from zarr.core.sync import sync

    for fs in _SESSIONS:
        session = getattr(fs, "_session", None)
        if session is not None and not session.closed:
            try:
                sync(session.close(), timeout=2)
            except Exception:  # the loop is gone: nothing left to warn about either
                pass
