"""Model directories of format version 2: a Zarr v3 group whose unit on disk is a shard.

    model/
      zarr.json      the group; its attribute ``distlg`` is the manifest (written last: a
                     directory without it is incomplete)
      global/        [G] float32: the global tensors and constants, flat (``Layout``), one chunk
      local/         [*grid, P] float32: each partition's local tensors, flat; one chunk a
                     partition, packed into shards of a block of partitions (``shards``)
      partitions/    [*grid] uint64: 0 where a partition is absent (cropped, never trained),
                     else 2^32 + the crc32c of its chunk in local/ (and of its scales)
      local_scales/  int8 models with per-partition scales only (``quantize``, ``weights``)
      optim/         checkpoints only: Adam's moments of the same arrays
                     (``global.exp_avg``, ``local.exp_avg``, ...), and an INCODE run's
                     ``harmonizer`` with its moments

Reading a partition costs its shard's index and its chunk's byte range, checked three ways:
the index's crc32c, the chunk's crc32c, and that crc against the model's entry in
``partitions/`` (so a shard copied from another model or position is refused). ``info``
reads the root document; cost follows the region a command touches, not the partition count.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .base import ADAM_STATES, Layout, ModelDir, global_layout, local_layout
from .location import Location, LocationError
from .manifest import FORMAT, Manifest, ModelDirError
from .quantize import Quantization
from .shards import ShardedArray, ShardError, ShardGrid, crc32c, dumps
from .weights import LocalWeights

if TYPE_CHECKING:
    import torch

VERSION = 2
ROOT = "zarr.json"
LOCAL, GLOBAL, PARTITIONS, HARMONIZER = "local", "global", "partitions", "harmonizer"
PRESENT_BIT = np.uint64(1 << 32)
CHECKSUM_CHUNK = 1 << 20
"""Entries per chunk of ``partitions/`` (8 MiB)."""


def optim_name(array: str, state: str) -> str:
    return f"optim/{array}.{state}"


def _is_sharded(location: Location) -> bool:
    return location.exists(ROOT)


class ShardedModel(ModelDir):
    """A version-2 model directory (see the module docstring)."""

    def __init__(self, location: Location, manifest: Manifest, shards: ShardGrid,
                 quantization: Quantization | None = None):
        super().__init__(location, manifest)
        self.shards = shards
        self.local_layout = local_layout(self.arch)
        self.global_layout = global_layout(self.arch)
        self.quantization = quantization
        """How the weights are stored (None: float32, as trained)."""
        self.weights = LocalWeights(location, shards, self.local_layout, quantization,
                                    tuple(self.arch.constant_shapes()))
        self._codes: np.ndarray | None = None

    @classmethod
    def read(cls, location: Location) -> "ShardedModel":
        where = f"{location}/{ROOT}"
        try:
            doc = json.loads(location.read(ROOT) or b"null")
            attrs = doc["attributes"]["distlg"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
            raise ModelDirError(f"{where} is not a distlg model's root document ({exc})") from None
        manifest = Manifest.parse(attrs, where)
        if manifest.version != VERSION:
            raise ModelDirError(f"{where} says format version {manifest.version}; a zarr.json model "
                                f"is version {VERSION}")
        try:
            block = tuple(int(b) for b in attrs["shards"]["block"])
            layout = attrs["layout"]
        except (KeyError, TypeError, ValueError):
            raise ModelDirError(f"{where} is malformed: no shards.block or layout") from None
        if len(block) != manifest.grid.ndim or min(block) < 1:
            raise ModelDirError(f"{where}: shards.block {list(block)} does not fit the grid")
        arch = manifest.arch
        quantization = Quantization.parse(attrs.get("quantization"), local_layout(arch),
                                          global_layout(arch), tuple(arch.constant_shapes()), where)
        model = cls(location, manifest, ShardGrid(manifest.grid.factors, block), quantization)
        if layout != {"local": model.local_layout.to_list(), "global": model.global_layout.to_list()}:
            raise ModelDirError(f"{where}: the tensor layout differs from what the architecture "
                                "implies (tampered or damaged)")
        if model.local_layout.width:
            model._check_array(LOCAL)
        return model

    def _check_array(self, name: str) -> None:
        """The array's zarr.json describes what the manifest implies: shape, shards, dtype."""
        where = f"{self.location}/{name}/zarr.json"
        try:
            meta = json.loads(self.location.read(f"{name}/zarr.json") or b"null")
            shape, dtype = meta["shape"], meta["data_type"]
            shard = meta["chunk_grid"]["configuration"]["chunk_shape"]
        except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
            raise ModelDirError(f"{where} is missing or malformed") from None
        array = self.weights.array
        width, expected = array.width, array.dtype.name
        if shape != [*self.grid.factors, width] or shard != [*self.shards.block, width] \
                or dtype != expected:
            raise ModelDirError(f"{where}: shape {shape}, shards {shard}, {dtype}: not the "
                                f"[{', '.join(map(str, self.grid.factors))}, {width}] {expected} "
                                "array this model's manifest implies")

    # -- what it holds -------------------------------------------------------------------------
    def _array(self, name: str) -> ShardedArray:
        """A float32 per-partition array (an Adam moment of a checkpoint)."""
        return ShardedArray(self.location.child(name), self.shards, self.local_layout.width)

    @property
    def codes(self) -> np.ndarray:
        """uint64 [num_partitions]: 0 for an absent partition, else 2^32 + its crc32c."""
        if self._codes is None:
            values = _read_small(self.location, PARTITIONS, np.uint64)
            if values.shape != self.grid.factors:
                raise ModelDirError(f"{self.location}/{PARTITIONS}: shape {values.shape}, the grid "
                                    f"is {self.grid.factors}")
            self._codes = values.ravel()
        return self._codes

    @property
    def present(self) -> np.ndarray:
        return self.codes != 0

    def storage(self) -> tuple[int, int]:
        if self.location.path is None:
            from ..data import remote

            return -1, remote.stored_bytes(self.location.spec)
        files = [p for p in self.location.path.rglob("*") if p.is_file()]
        return len(files), sum(p.stat().st_size for p in files)

    @property
    def global_checksum(self) -> int:
        """The crc32c of the stored global values, as the root document records it."""
        expected = self.manifest.raw.get("global", {}).get("crc32c")
        if not isinstance(expected, int):
            raise ModelDirError(f"{self.location}/{ROOT}: the root document lacks the global "
                                "tensors' checksum (global.crc32c); not a model distlg wrote")
        return expected

    # -- reading ---------------------------------------------------------------------------------
    def read_global_flat(self, state: str | None = None) -> np.ndarray:
        """The global values (or their Adam moment ``state``) as one flat float32 array,
        checked against the manifest's checksum (no torch needed)."""
        name = GLOBAL if state is None else optim_name(GLOBAL, state)
        q = self.quantization if state is None else None
        codes = q.codes(self.global_layout, tuple(self.arch.constant_shapes())) if q else None
        values = _read_small(self.location, name, q.dtype if q else np.float32)
        width = codes.width if codes else self.global_layout.width
        if values.shape != (width,):
            raise ModelDirError(f"{self.location}/{name}: {values.shape[0] if values.ndim else 0} "
                                f"values, the architecture's global tensors have {width}")
        stored = values.astype(values.dtype.newbyteorder("<")).tobytes()
        if state is None and crc32c(stored) != self.global_checksum:
            raise ModelDirError(f"{self.location}/{GLOBAL}: the global tensors do not match the "
                                "model's checksum (replaced by another model's?)")
        if codes is not None:
            values = codes.decode(values[None], q.global_scales)[0]
        return values

    def read_global(self, state: str | None = None) -> dict[str, "torch.Tensor"]:
        values = self.read_global_flat(state)
        return {k: v[0] for k, v in self.global_layout.unpack(values[None]).items()}

    def read_local(self, pids: Sequence[int], state: str | None = None) -> dict[str, torch.Tensor]:
        pids = np.asarray(self.check_held(pids), dtype=np.int64)
        return self.local_layout.unpack(self.read_rows(pids, state))

    def read_rows(self, pids: np.ndarray, state: str | None = None) -> np.ndarray:
        """Flat local values [len(pids), P] of ``pids`` (or their Adam moment ``state``),
        float32 (decoded where the model is quantized)."""
        weights = self.weights if state is None else LocalWeights(
            self.location, self.shards, self.local_layout, None, name=optim_name(LOCAL, state))
        out = np.empty((len(pids), self.local_layout.width), dtype=np.float32)
        if not self.local_layout.width:
            return out
        shard_of, slot_of = self.shards.locate(pids)
        order = np.argsort(shard_of, kind="stable")
        for rows in np.split(order, np.flatnonzero(np.diff(shard_of[order])) + 1) if len(pids) else []:
            shard = int(shard_of[rows[0]])
            slots = slot_of[rows]
            whole = 4 * len(rows) >= self.shards.slots
            try:
                values, crcs = weights.read_slots(shard, slots, whole)
                if state is None:
                    self._check_codes(pids[rows], crcs, weights.array.location, shard)
            except (ShardError, LocationError) as exc:
                raise ModelDirError(str(exc)) from None
            out[rows] = values
        return out

    def _check_codes(self, pids: np.ndarray, crcs: np.ndarray, where, shard: int) -> None:
        expected = self.codes[pids]
        wrong = expected != (PRESENT_BIT | crcs.astype(np.uint64))
        if wrong.any():
            raise ModelDirError(f"{where}/{self.shards.key(shard)}: partition {int(pids[wrong][0])}'s "
                                "weights do not match the model's checksum (a shard from another "
                                "model or position, or a changed one)")

    def read_harmonizer(self) -> dict[str, torch.Tensor]:
        section = (self.training or {}).get(HARMONIZER)
        if not section:
            raise ModelDirError(f"{self.path} holds no harmonizer")
        layout = Layout({name: tuple(shape) for name, shape in section["layout"]})
        out = {}
        for state in (None,) + ADAM_STATES:
            name = f"optim/{HARMONIZER}" if state is None else optim_name(HARMONIZER, state)
            values = _read_small(self.location, name, np.float32)
            prefix = "" if state is None else f"optim.{state}."
            out.update({prefix + k: v[0] for k, v in layout.unpack(values[None]).items()})
        return out

    def verify(self, pids: Sequence[int] | None = None) -> None:
        ids = np.flatnonzero(self.present) if pids is None else np.asarray(pids, dtype=np.int64)
        self.read_global()
        for start in range(0, len(ids), 1 << 16):
            self.read_rows(ids[start:start + (1 << 16)])


ModelDir.FORMATS.append((_is_sharded, ShardedModel))


def _read_small(location: Location, name: str, dtype) -> np.ndarray:
    """A small array (``global``, ``partitions``) read whole through zarr; a one-line
    ``ModelDirError`` if it is missing or damaged."""
    import zarr

    try:
        array = zarr.open_array(store=location.zarr_store(), path=name, mode="r", zarr_format=3)
        values = array[...]
    except Exception as exc:  # missing metadata, a chunk failing its crc32c, a damaged chunk
        raise ModelDirError(f"{location}/{name} is missing or damaged ({str(exc).splitlines()[0][:120]})"
                            ) from None
    if values.dtype != np.dtype(dtype):
        raise ModelDirError(f"{location}/{name} holds {values.dtype}, expected {np.dtype(dtype)}")
    return values


def write_small(location: Location, name: str, values: np.ndarray, chunks: Sequence[int] | None = None,
                compress: bool | int = False, attributes: dict | None = None,
                compact: bool = False) -> None:
    """Write a small array through zarr (encoded in memory, each object written whole);
    ``compress``: True for Blosc (zstd, byte shuffle), a level for plain zstd; ``compact``
    JSON (a quantized model's)."""
    import zarr
    from zarr.codecs import BloscCodec, BloscShuffle, BytesCodec, Crc32cCodec, ZstdCodec
    from zarr.storage import MemoryStore

    store = MemoryStore()
    compressors = [] if compress is False else [ZstdCodec(level=compress)] if compress is not True \
        else [BloscCodec(cname="zstd", clevel=3, shuffle=BloscShuffle.shuffle)]
    array = zarr.create_array(store, shape=values.shape, dtype=values.dtype,
                              chunks=tuple(chunks or values.shape or (1,)), serializer=BytesCodec(),
                              compressors=compressors + [Crc32cCodec()], fill_value=0,
                              attributes=attributes)
    array[...] = values
    for key, buffer in sorted(store._store_dict.items()):
        data = buffer.to_bytes()
        if key == "zarr.json" and compact:
            data = dumps(json.loads(data), compact=True)
        location.write(f"{name}/{key}", data)


def checksum_chunks(factors: Sequence[int]) -> tuple[int, ...]:
    """Chunks of ``partitions/``: whole trailing axes, at most ``CHECKSUM_CHUNK`` entries."""
    chunks, room = [], CHECKSUM_CHUNK
    for f in reversed(factors):
        chunks.insert(0, max(1, min(f, room)))
        room = max(1, room // max(f, 1))
    return tuple(chunks)


def group_document(attributes: dict | None = None) -> bytes:
    """A group's zarr.json; compact JSON for a quantized model (``shards.dumps``)."""
    doc = {"zarr_format": 3, "node_type": "group", "attributes": attributes or {}}
    return dumps(doc, "quantization" in (attributes or {}).get("distlg", {}))


def root_attributes(manifest: dict, shards: ShardGrid, arch, present: int, global_crc: int,
                    training: dict | None, quantization: Quantization | None = None) -> dict:
    """The ``distlg`` attribute of a version-2 model's root (its manifest)."""
    local, glob = local_layout(arch), global_layout(arch)
    attrs = {
        "format": FORMAT, "version": VERSION,
        "signal": manifest["signal"], "grid": manifest["grid"], "architecture": manifest["architecture"],
        "params": {"global": arch.global_params(), "local": present * local.width,
                   "per_partition": local.width, "partitions_present": present},
        "layout": {"local": local.to_list(), "global": glob.to_list()},
        "shards": {"block": list(shards.block), "shards": list(shards.shards)},
        "global": {"crc32c": global_crc},
    }
    if quantization is not None:
        constants = tuple(arch.constant_shapes())
        attrs["quantization"] = quantization.section(
            quantization.codes(local, constants) if local.width else None,
            quantization.codes(glob, constants))
    if training is not None:
        attrs["training"] = training
    return attrs


def describe(grid, arch, signal) -> dict:
    """The signal, grid and architecture sections of a manifest."""
    return {"signal": signal.to_dict(),
            "grid": {"factors": list(grid.factors), "overlaps": list(grid.overlaps),
                     "padding": list(grid.padding), "part_shape": list(grid.part_shape),
                     "extent": list(grid.extent)},
            "architecture": arch.to_dict()}


def shard_count(grid) -> int:
    return math.prod(grid.shards)
