"""Reading a remote object with a bound on its size: a server cannot make a reader hold more
than it expects.

fsspec's readers (HTTP's and s3fs's ``_cat_file``) take whatever body the server sends; a
``zarr.json`` whose body never ends drove ``distlg info http://...`` to 24 GB. Here each answer
is read in pieces and refused as soon as it (or its announced Content-Length) passes ``limit``:
a few MB for metadata, a chunk's (or a whole shard's, for servers that ignore Range headers)
compressed bound for the rest (``object_limit``). The same ranges as zarr's ``FsspecStore.get``
are asked for; a missing object is ``None``. Nothing here imports torch.
"""

from __future__ import annotations

import math

METADATA_BYTES = 16 << 20
"""The most a metadata object (zarr.json) may hold: a large store's is a few kB."""
DEFAULT_OBJECT_BYTES = 256 << 20
"""The most any other object may hold before the array's chunk shape is known."""
MARGIN_BYTES = 1 << 20
"""Allowance beyond a chunk's uncompressed size: codec headers, a checksum, a shard's index."""
PIECE = 1 << 16


class TooLarge(Exception):
    """An answer longer than its limit."""

    def __init__(self, limit: int):
        super().__init__(f"the answer exceeds {limit:,} bytes, more than such an object holds")
        self.limit = limit


def is_metadata(key: str) -> bool:
    return key.rsplit("/", 1)[-1] in ("zarr.json", ".zattrs", ".zarray", ".zgroup", ".zmetadata")


def object_limit(array) -> int:
    """The most one object of ``array`` may hold: a chunk's uncompressed bytes at most twice
    over (no codec here expands data), or a whole shard's where chunks sit in shards."""
    unit = array.shards or array.chunks
    return 2 * math.prod(unit) * array.dtype.itemsize + MARGIN_BYTES


def limits(byte_range) -> tuple[int | None, int | None]:
    """(start, end) for fsspec's ``_cat_file`` from a zarr ``ByteRequest``."""
    from zarr.abc.store import OffsetByteRequest, RangeByteRequest, SuffixByteRequest

    if byte_range is None:
        return None, None
    if isinstance(byte_range, RangeByteRequest):
        return byte_range.start, byte_range.end
    if isinstance(byte_range, OffsetByteRequest):
        return byte_range.offset, None
    if isinstance(byte_range, SuffixByteRequest):
        return -byte_range.suffix, None
    raise ValueError(f"unexpected byte range {byte_range!r}")


async def _collect(read, announced: int | None, limit: int) -> bytes:
    """The body ``read(n)`` gives, piece by piece, refused past ``limit`` bytes."""
    if announced is not None and announced > limit:
        raise TooLarge(limit)
    body = bytearray()
    while piece := await read(PIECE):
        body += piece
        if len(body) > limit:
            raise TooLarge(limit)
    return bytes(body)


async def http_get(fs, path: str, start: int | None, end: int | None, limit: int) -> bytes | None:
    """One HTTP(S) object (or a range of it) through fsspec's session, at most ``limit`` bytes."""
    kw = fs.kwargs.copy()
    if start is not None or end is not None:
        if start == end:
            return b""
        kw["headers"] = {**kw.pop("headers", {}), "Range": await fs._process_limits(path, start, end)}
    session = await fs.set_session()
    async with session.get(fs.encode_url(path), **kw) as answer:
        if answer.status == 404:
            return None
        answer.raise_for_status()
        return await _collect(answer.content.read, answer.content_length, limit)


async def s3_get(fs, path: str, start: int | None, end: int | None, limit: int) -> bytes | None:
    """One S3 object (or a range of it) through s3fs's client, at most ``limit`` bytes."""
    bucket, key, _ = fs.split_path(path)
    head = {}
    if start is not None or end is not None:
        head["Range"] = await fs._process_limits(path, start, end)
    try:
        answer = await fs._call_s3("get_object", Bucket=bucket, Key=key, **head)
    except FileNotFoundError:
        return None
    body = answer["Body"]
    try:
        return await _collect(body.read, answer.get("ContentLength"), limit)
    finally:
        body.close()
