"""Packs: a signal store's chunks rewritten as one sequence of tar shards per worker.

The streaming sampler reads, every window, the chunks of its worker's shard in storage order
(``stream.shard_chunks``). A pack (``distlg pack``) stores exactly those chunks, in that order,
in webdataset tar shards of the worker's own, so a window is one long sequential read (from a
disk, an https:// server or any command's output) instead of a read per chunk. A pack is made
for one partition grid and one number of workers; ``Pack.source`` refuses any other.

    OUT/worker-{rank:03d}-{k:05d}.tar   one sample per chunk, KEY = c{chunk id:012d}:
        KEY.npy     the chunk's values as stored, [*shape, channels] (cut at the signal's edge)
        KEY.json    {"chunk": id, "index": chunk index per axis, "origin": first sample per
                    axis, "shape": samples per axis, "crc32": of KEY.npy, checked on reading}
    OUT/pack.json   written last: the store (fingerprint, shape, dtype, value range, kind), the
                    grid (factors, halo, partition shape), the chunk shape, the worker count,
                    and each worker's shard files with their chunk counts, sizes and sha256

Coordinates are never stored: they follow from the chunk's origin. ``write_pack`` builds the
pack in a hidden folder beside OUT and moves it into place when it is whole. webdataset is used
only to write and read tar streams in order: no shuffling, no splitting by node or worker (each
worker opens only the shards pack.json lists for its rank).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Generator, Iterator, Sequence

import numpy as np

from ..errors import DistlgError
from ..geometry import Box, PartitionGrid
from ..staging import staged
from .signal import Signal
from .stream import chunk_box, shard_chunks, signal_chunks

FORMAT = "distlg-pack"
VERSION = 1
MANIFEST = "pack.json"


class PackError(DistlgError):
    """A pack that is missing, damaged, or made for another signal, grid or worker count."""


def shard_name(rank: int, k: int) -> str:
    return f"worker-{rank:03d}-{k:05d}.tar"


def _sizes(values: Sequence[int]) -> str:
    return "x".join(str(int(v)) for v in values)


# -- writing ------------------------------------------------------------------------------------
def describe(signal: Signal, grid: PartitionGrid, chunks: Sequence[int], workers: int) -> dict:
    """What pack.json says of the signal and the grid a pack is made for."""
    return {"format": FORMAT, "version": VERSION,
            "signal": {"store": signal.info.store, "fingerprint": signal.info.fingerprint,
                       "kind": signal.kind, "shape": list(signal.shape), "channels": signal.channels,
                       "dtype": np.dtype(signal.data.dtype).str,
                       "value_range": [float(v) for v in signal.info.value_range]},
            "grid": {"factors": list(grid.factors), "overlaps": list(grid.overlaps),
                     "part_shape": list(grid.part_shape)},
            "chunks": [int(c) for c in chunks], "workers": int(workers)}


def _encode(chunk: int, box: Box, block: np.ndarray, chunks: Sequence[int]) -> dict:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(block), allow_pickle=False)
    meta = {"chunk": chunk, "index": [a // int(c) for (a, _), c in zip(box, chunks)],
            "origin": [a for a, _ in box], "shape": [b - a for a, b in box],
            "crc32": zlib.crc32(buf.getvalue())}
    return {"__key__": f"c{chunk:012d}", "npy": buf.getvalue(), "json": json.dumps(meta).encode()}


def _write_worker(signal: Signal, chunk_ids: list[int], chunks: Sequence[int], folder: Path,
                  rank: int, shard_bytes: int, bar) -> list[dict]:
    """Worker ``rank``'s chunks into tar shards of about ``shard_bytes`` each; their files."""
    import webdataset as wds

    files: list[dict] = []
    sink = None
    for chunk in chunk_ids:
        if sink is None or files[-1]["bytes"] >= shard_bytes:
            if sink is not None:
                sink.close()
            files.append({"name": shard_name(rank, len(files)), "chunks": 0, "bytes": 0})
            sink = wds.TarWriter(str(folder / files[-1]["name"]), encoder=False)
        box = chunk_box(chunk, chunks, signal.shape)
        sample = _encode(chunk, box, signal.read(box), chunks)
        sink.write(sample)
        files[-1]["chunks"] += 1
        files[-1]["bytes"] += len(sample["npy"]) + len(sample["json"])
        bar.update(1)
    if sink is not None:
        sink.close()
    for f in files:
        f["bytes"] = (folder / f["name"]).stat().st_size
        f["sha256"] = _sha256(folder / f["name"])
    return files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while piece := fh.read(1 << 24):
            digest.update(piece)
    return digest.hexdigest()


def write_pack(signal: Signal, grid: PartitionGrid, shards: Sequence[Sequence[int]], out: str | Path,
               shard_bytes: int = 256 << 20, progress: bool = True) -> dict:
    """Write the pack of ``signal`` for ``grid`` and the workers' partitions ``shards``
    (``geometry.shard``) to the new folder ``out``; returns what pack.json holds."""
    from tqdm.auto import tqdm

    out = Path(out)
    if out.exists() or out.is_symlink():
        raise PackError(f"{out} exists; give a new folder for the pack (or delete that one)")
    chunks = signal_chunks(signal, grid)
    plan = [shard_chunks(grid, pids, chunks) for pids in shards]
    manifest = describe(signal, grid, chunks, len(shards))
    with staged(out, PackError) as stage, tqdm(total=sum(map(len, plan)), unit="chunk",
                                                 desc=f"pack {out.name}",
                                                 disable=None if progress else True) as bar:
        manifest["shards"] = [
            {"rank": rank, "partitions": len(pids), "chunks": len(ids),
             "files": _write_worker(signal, ids, chunks, stage, rank, shard_bytes, bar)}
            for rank, (pids, ids) in enumerate(zip(shards, plan))]
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


# -- reading ------------------------------------------------------------------------------------
def _join(spec: str, name: str) -> str:
    """The address of ``name`` in the pack ``spec``: a folder, a URL prefix, or a ``pipe:``
    command to which the name is appended as it is."""
    return spec + name if spec.startswith("pipe:") else spec.rstrip("/") + "/" + name


@dataclass
class Pack:
    spec: str
    manifest: dict

    def check(self, signal: Signal, grid: PartitionGrid, chunks: Sequence[int], workers: int) -> None:
        """A ``PackError`` naming both values unless the pack was made for this signal, grid,
        chunk shape and worker count."""
        want = describe(signal, grid, chunks, workers)
        have, where = self.manifest, f"the pack {self.spec}"
        if have["workers"] != workers:
            raise PackError(f"{where} was made for {have['workers']} worker(s); this run has "
                            f"{workers}: pack again with --workers {workers}")
        for key in ("factors", "overlaps"):
            if have["grid"][key] != want["grid"][key]:
                raise PackError(f"{where} was made for grid {key} {_sizes(have['grid'][key])}; this "
                                f"run uses {_sizes(want['grid'][key])}: pack with the run's grid options")
        for key in ("shape", "dtype", "fingerprint"):
            a, b = have["signal"][key], want["signal"][key]
            if a != b and (key != "fingerprint" or None not in (a, b)):
                raise PackError(f"{where} holds another signal ({key} {a}; the run's signal has "
                                f"{b}): pack this signal")
        if have["chunks"] != want["chunks"]:
            raise PackError(f"{where} has chunks of {_sizes(have['chunks'])}; the run's store has "
                            f"{_sizes(want['chunks'])}: pack this store again")

    def source(self, signal: Signal, grid: PartitionGrid, workers: int, rank: int) -> PackChunks:
        """Worker ``rank``'s chunks, once the pack is checked against the run."""
        chunks = signal_chunks(signal, grid)
        self.check(signal, grid, chunks, workers)
        (entry,) = [s for s in self.manifest["shards"] if s["rank"] == rank]
        return PackChunks([_join(self.spec, f["name"]) for f in entry["files"]], rank)


def open_pack(spec: str | Path) -> Pack:
    """The pack at ``spec`` (a folder, an https:// prefix, or a ``pipe:`` command prefix)."""
    import webdataset as wds

    spec = str(spec)
    address = _join(spec, MANIFEST)
    local = "://" not in spec and not spec.startswith("pipe:")
    if local and not Path(address).is_file():
        why = "does not exist" if not Path(spec).exists() else f"has no {MANIFEST}"
        raise PackError(f"the pack {spec} {why} (write one with `distlg pack STORE {spec}`; "
                        f"{MANIFEST} is written last, so a pack without it did not finish)")
    try:
        with wds.gopen(address, "rb") as fh:
            manifest = json.loads(fh.read())
    except Exception as exc:
        status = re.search(r"exit (\d+)", str(exc))
        why = (f"the download or command failed with status {status[1]}" if status
               else _first_line(exc))
        raise PackError(f"cannot read {address} ({why}); is {spec} a pack written by "
                        "`distlg pack`?") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise PackError(f"{address} is not a distlg pack manifest")
    if manifest.get("version") != VERSION:
        raise PackError(f"{address} has pack version {manifest.get('version')!r}; this distlg "
                        f"reads version {VERSION}")
    return Pack(spec, manifest)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class PackChunks:
    """A worker's chunks from its tar shards: each window reads them from the first, in
    order, up to the last chunk it needs, and checks each against the chunk it expects."""

    def __init__(self, urls: list[str], rank: int):
        self.urls, self.rank = urls, rank
        self.remote = any("://" in url for url in urls)
        """Whether the shards come over a network (the sampler then reads them less often)."""

    def _samples(self, url: str) -> Iterator[dict]:
        """The samples of one shard, in order (webdataset splits nothing: one URL, no node or
        worker splitting, no shuffling)."""
        import webdataset as wds

        pipeline = wds.WebDataset([url], shardshuffle=False, nodesplitter=None,
                                  workersplitter=None, empty_check=False)
        samples = iter(pipeline)
        try:
            yield from samples
        finally:
            getattr(samples, "close", lambda: None)()

    def read(self, chunks: list[tuple[int, Box]]) -> Generator[np.ndarray, None, None]:
        wanted = iter(chunks)
        want = next(wanted, None)
        url = self.urls[-1] if self.urls else "(no shard files)"
        for url in self.urls:
            if want is None:
                return
            samples = self._samples(url)
            try:
                while want is not None:
                    meta, block = self._next(samples, url, want[0])
                    if meta is None:
                        break
                    if block is None:
                        continue
                    expected = tuple(b - a for a, b in want[1])
                    if meta["chunk"] != want[0] or block.shape[:-1] != expected:
                        raise PackError(f"{url}: holds chunk {meta['chunk']} of "
                                        f"{_sizes(block.shape[:-1])} where worker {self.rank} "
                                        f"expects chunk {want[0]} of {_sizes(expected)}; write the "
                                        "pack again")
                    yield block
                    want = next(wanted, None)
            finally:
                samples.close()
        if want is not None:
            raise PackError(f"{url}: worker {self.rank}'s shards end before chunk {want[0]} (a "
                            "truncated tar shard?); write the pack again")

    @staticmethod
    def _next(samples: Iterator[dict], url: str, want: int) -> tuple[dict | None, np.ndarray | None]:
        """The next sample's description and, unless it comes before chunk ``want`` (one this
        window skips), its values; (None, None) at the end of the shard."""
        try:
            sample = next(samples, None)
            if sample is None:
                return None, None
            if "npy" not in sample or "json" not in sample:
                raise PackError(f"sample {sample.get('__key__')} lacks its .npy or .json")
            meta = json.loads(sample["json"])
            if meta["chunk"] < want:
                return meta, None
            if "crc32" in meta and zlib.crc32(sample["npy"]) != meta["crc32"]:
                raise PackError(f"chunk {meta['chunk']} fails its crc32 checksum")
            return meta, np.load(io.BytesIO(sample["npy"]), allow_pickle=False)
        except Exception as exc:
            reason = exc.args[0] if exc.args and isinstance(exc.args[0], str) else _first_line(exc)
            reason = reason.split(" @ ")[0].strip() or type(exc).__name__
            raise PackError(f"{url}: damaged or truncated tar shard ({reason}); write the pack "
                            "again") from None
