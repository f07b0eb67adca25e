"""Stores over the network: ``open_signal("https://host/clip.zarr")`` or ``"s3://bucket/clip.zarr"``.

This module owns the transport, not the store format: ``url_store(url)`` gives a Zarr store
object for the URL, which ``distlg.data.store`` opens and checks like a local path. Both
schemes go through zarr's fsspec support, wrapped in ``RetryingStore``:

- ``http://`` and ``https://``: fsspec's HTTP filesystem on aiohttp (``pip install
  'distlg[remote]'``), read-only;
- ``s3://``: s3fs (``pip install 'distlg[s3]'``), read and written (``distlg ingest ... s3://``).
  Credentials, region and endpoint come the standard AWS way: ``AWS_ACCESS_KEY_ID`` /
  ``AWS_SECRET_ACCESS_KEY`` (or ``~/.aws/credentials``, ``AWS_PROFILE``), ``AWS_DEFAULT_REGION``,
  and ``AWS_ENDPOINT_URL`` (or ``AWS_ENDPOINT_URL_S3``) for an S3-compatible server (MinIO,
  Ceph, ...). botocore's and s3fs's own retries are turned off: the retrying here is the only
  one, so its tries and waits are the ones stated.

For every request:

- a time limit: ``TIMEOUT_S`` in all for a read request (body included); an S3 write
  (whose size, up to a whole shard, sets how long it may take) has botocore's limits instead,
  ``TIMEOUT_S`` to connect and ``TIMEOUT_S`` for each wait on the server's answer;
- transient failures (5xx answers, 408/425/429, refused or reset connections, timeouts) are
  retried ``TRIES`` times with exponential backoff from ``BACKOFF_S``; then, and on any other
  failure, a one-line ``RemoteError`` names the URL and the key (``zarr.json`` or a chunk such
  as ``c/0/1/0``); it surfaces where the samplers read (``Signal.read``) or where ingest writes;
- a size limit on every answer (``distlg.data.bounded``): a few MB for ``zarr.json``, a
  chunk's (or shard's) bound for the rest, read piece by piece and refused past it, so a
  hostile or broken server cannot exhaust the reader's memory;
- at most ``CONCURRENCY`` requests are in flight per store, and zarr's ``async.concurrency``
  (how many chunks one slice fetches at once) is raised to that when a URL is opened.

A missing object (HTTP 404, S3 NoSuchKey) for a chunk is a chunk that was never written (all
fill value), as for a local store.
A sharded store is read in byte ranges of its shards (the index at the end, then each chunk);
a server that ignores Range headers and sends the whole object (Python's ``http.server``
does; object stores and common web servers do not) is still read right: the range is cut out
here, at the cost of fetching whole shards.
Nothing here imports torch.
"""

from __future__ import annotations

import asyncio
import atexit

import zarr
from zarr.storage import WrapperStore

from . import bounded
from .signal import StoreError

SCHEMES = ("http://", "https://", "s3://")
WRITABLE = ("s3",)
"""Schemes whose stores can be written (HTTP is read-only here)."""
EXTRA = {"http": "remote", "https": "remote", "s3": "s3"}
"""The optional dependencies (``pip install 'distlg[EXTRA]'``) each scheme needs."""
TIMEOUT_S = 30.0
"""Total time allowed for one read request (connecting, headers and body); for an S3 write,
the time allowed to connect and for each wait on the server's answer."""
TRIES = 5
BACKOFF_S = 0.2
"""Wait before the second try; it doubles before each further one (0.2 + 0.4 + 0.8 + 1.6 s)."""
CONCURRENCY = 32
"""Requests in flight per store at most, and chunks the streaming sampler reads ahead of use
(``stream.read_ahead``): at 100 ms a request, 32 chunks of ~250 KB (compressed video) in
flight move ~80 MB/s."""
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


class RemoteError(StoreError):
    """A remote store that cannot be read or written: unreachable, failing, or without the
    extra."""


def is_url(spec: object) -> bool:
    """Whether ``spec`` names a store by a URL (http://, https:// or s3://)."""
    return str(spec).lower().startswith(SCHEMES)


def scheme(url: str) -> str:
    """``s3``, ``https`` or ``http``."""
    return str(url).split("://", 1)[0].lower()


def _boto():
    """botocore's exceptions module, or None where s3fs (and so botocore) is not installed."""
    try:
        import botocore.exceptions
    except ImportError:
        return None
    return botocore.exceptions


def _failures() -> tuple[type[BaseException], ...]:
    """The exceptions that mean a request failed (rather than a bug here)."""
    import aiohttp

    boto = _boto()
    extra = (boto.BotoCoreError, boto.ClientError) if boto else ()
    return (aiohttp.ClientError, asyncio.TimeoutError, OSError) + extra


def _answer(exc: BaseException) -> tuple[int, str] | None:
    """The HTTP status and the server's words for a request the server answered with an error
    (s3fs turns S3's answers into OSErrors whose cause is botocore's ``ClientError``)."""
    import aiohttp

    if isinstance(exc, aiohttp.ClientResponseError):
        return exc.status, exc.message
    boto = _boto()
    for error in (exc, exc.__cause__):
        if boto and isinstance(error, boto.ClientError):
            meta, detail = error.response.get("ResponseMetadata", {}), error.response.get("Error", {})
            words = ": ".join(w for w in (detail.get("Code"), detail.get("Message")) if w)
            return int(meta.get("HTTPStatusCode", 0)), words
    return None


def _reason(exc: BaseException) -> str:
    """What went wrong with a request, in a few words on one line."""
    answer, boto = _answer(exc), _boto()
    if answer is not None:
        text = f"HTTP {answer[0]} {answer[1]}"
    elif isinstance(exc, asyncio.TimeoutError):
        return f"no complete answer within {TIMEOUT_S:g} s"
    elif boto and isinstance(exc, boto.NoCredentialsError):
        return ("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                "AWS_PROFILE / ~/.aws/credentials")
    else:
        text = str(exc) or type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= 200 else text[:197] + "..."


def transient(exc: BaseException) -> bool:
    """Whether a failed request is worth trying again."""
    import aiohttp

    answer, boto = _answer(exc), _boto()
    if answer is not None:
        return answer[0] in RETRY_STATUS
    connection = (boto.ConnectionError, boto.HTTPClientError) if boto else ()
    return isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError) + connection)


class RetryingStore(WrapperStore):
    """A Zarr store that retries transient failures and names what failed; read-only unless
    its transport writes (s3://)."""

    def __init__(self, store, url: str, read_limit: float | None = None,
                 object_limit: int = bounded.DEFAULT_OBJECT_BYTES):
        super().__init__(store)
        self.url = url
        self.read_limit = read_limit
        """Total time for one read (connecting, headers and the whole body)."""
        self.object_limit = object_limit
        """The most bytes one chunk or shard may hold (``bounded.object_limit``, set once the
        array's metadata is read); metadata may hold ``bounded.METADATA_BYTES``."""
        self._slots = asyncio.Semaphore(CONCURRENCY)

    def _with_store(self, store) -> "RetryingStore":
        return type(self)(store, self.url, self.read_limit, self.object_limit)

    async def _retry(self, key: str, call, *args, verb: str = "read", limit: float | None = None):
        """``call(*args)``, tried again after transient failures; ``key`` names what it reads
        (or writes, ``verb``); each try takes at most ``limit`` seconds where given."""
        failures = _failures()
        delay = BACKOFF_S
        for attempt in range(1, TRIES + 1):
            try:
                async with self._slots:
                    request = call(*args)
                    return await (asyncio.wait_for(request, limit) if limit else request)
            except failures as exc:
                if not transient(exc) or attempt == TRIES:
                    tries = f" after {attempt} tries" if attempt > 1 else ""
                    raise RemoteError(f"could not {verb} {key} of {self.url}{tries} "
                                      f"({_reason(exc)})") from exc
            await asyncio.sleep(delay)
            delay *= 2

    async def get(self, key, prototype, byte_range=None):
        found = await self._retry(key, self._read, key, byte_range, limit=self.read_limit)
        return _cut(None if found is None else prototype.buffer.from_bytes(found), byte_range)

    async def _read(self, key: str, byte_range) -> bytes | None:
        """One object (or range) read by ``bounded``: refused past its size limit."""
        store = self._store
        if not store._is_open:
            await store._open()
        path = f"{store.path.rstrip('/')}/{key}" if store.path else key
        limit = bounded.METADATA_BYTES if bounded.is_metadata(key) else self.object_limit
        read = bounded.s3_get if scheme(self.url) == "s3" else bounded.http_get
        try:
            return await read(store.fs, path, *bounded.limits(byte_range), limit)
        except bounded.TooLarge as exc:
            raise RemoteError(f"could not read {key} of {self.url} ({exc})") from None

    async def get_partial_values(self, prototype, key_ranges):
        return await asyncio.gather(*(self.get(key, prototype, byte_range)
                                      for key, byte_range in key_ranges))

    async def exists(self, key: str) -> bool:
        return await self._retry(key, self._store.exists, key, limit=self.read_limit)

    async def set(self, key, value) -> None:
        await self._retry(key, self._store.set, key, value, verb="write")

    async def delete(self, key: str) -> None:
        await self._retry(key, self._store.delete, key, verb="delete")

    async def delete_dir(self, prefix: str) -> None:
        await self._retry(prefix or "the objects", self._store.delete_dir, prefix, verb="delete")

    async def is_empty(self, prefix: str) -> bool:
        return await self._retry(prefix or "the objects", self._store.is_empty, prefix, verb="list")

    async def nbytes(self) -> int:
        """Bytes of all the store's objects, from one listing (not a request per object, as
        zarr's ``getsize_prefix`` makes)."""
        fs, path = self._store.fs, self._store.path
        return await self._retry("the objects", fs._du, path, verb="list")


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


def check_writable(url: str) -> None:
    """Refuse, in one line, a URL whose scheme is read-only here."""
    kind = scheme(url)
    if kind not in WRITABLE:
        raise RemoteError(f"{url}: {kind}:// stores are read-only; write to a local path or an "
                          "s3:// URL")


def url_store(url: str, writable: bool = False) -> RetryingStore:
    """A Zarr store for the store at ``url``: read-only, or ``writable`` (s3:// only)."""
    url = url.rstrip("/")
    kind = scheme(url)
    if writable:
        check_writable(url)
    try:
        import aiohttp
        from fsspec.core import url_to_fs
        from zarr.storage import FsspecStore

        if kind == "s3":
            import s3fs  # noqa: F401  (fsspec finds it by the scheme; here to name the extra)
    except ImportError:
        raise RemoteError(f"reading {kind}:// stores needs `pip install "
                          f"'distlg[{EXTRA[kind]}]'`") from None
    if kind == "s3":
        # botocore's own timeouts bound each phase of a request (an S3 read also gets a total
        # limit below); its retries and s3fs's are off, so that RetryingStore's are the only ones.
        fs, path = url_to_fs(url, asynchronous=True, config_kwargs={
            "connect_timeout": TIMEOUT_S, "read_timeout": TIMEOUT_S,
            "retries": {"mode": "standard", "total_max_attempts": 1}})
        fs.retries = 1
        read_limit = TIMEOUT_S
    else:
        fs, path = url_to_fs(url, asynchronous=True,
                             client_kwargs={"timeout": aiohttp.ClientTimeout(total=TIMEOUT_S)})
        read_limit = TIMEOUT_S  # aiohttp's own total did not stop a body that never ends
    # fsspec keeps one filesystem, and so one session, per set of options: every store shares
    # it, and it is closed at exit (aiohttp warns about sessions left open).
    if not _SESSIONS:
        atexit.register(_close_sessions)
    _SESSIONS.add(fs)
    if zarr.config.get("async.concurrency") < CONCURRENCY:
        zarr.config.set({"async.concurrency": CONCURRENCY})
    return RetryingStore(FsspecStore(fs, path=path, read_only=not writable), url, read_limit)


def is_empty(url: str) -> bool:
    """Whether no object lies under ``url`` (a store's prefix)."""
    from zarr.core.sync import sync

    return sync(url_store(url).is_empty(""))


def absence(url: str) -> str:
    """Why no distlg store opened at ``url``, in a few words: from a listing for s3:// (a missing
    bucket, no objects, or objects but no store); HTTP cannot list."""
    if scheme(url) != "s3":
        return "no zarr.json with distlg attributes there, or the server answered 404"
    try:
        empty = is_empty(url)
    except RemoteError as exc:
        return _reason(exc.__cause__) if exc.__cause__ else str(exc)
    return "no objects under it" if empty else "objects, but no zarr.json with distlg attributes"


def delete(url: str) -> None:
    """Delete every object under ``url``."""
    from zarr.core.sync import sync

    sync(url_store(url, writable=True).delete_dir(""))


def stored_bytes(url: str) -> int:
    """Bytes of the objects under ``url``."""
    from zarr.core.sync import sync

    return sync(url_store(url).nbytes())


_SESSIONS: set = set()
"""The filesystems opened, whose sessions ``_close_sessions`` closes at exit."""


def _close_sessions() -> None:
    """Close the aiohttp sessions (HTTP) and botocore clients (S3) on zarr's event loop (this
    runs before zarr stops it)."""
    from zarr.core.sync import sync

    for fs in _SESSIONS:
        session = getattr(fs, "_session", None)
        if session is not None and not session.closed:
            closing = session.close()
        elif getattr(fs, "_s3creator", None) is not None:
            closing = fs._s3creator.__aexit__(None, None, None)
        else:
            continue
        try:
            sync(closing, timeout=2)
        except Exception:  # the loop is gone: nothing left to warn about either
            pass
