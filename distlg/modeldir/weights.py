"""A model's local weights on disk, a shard at a time: codes, scales and their checksums.

``local/`` holds one chunk per partition: float32 values, or (quantized, ``quantize``) float16
values or int8 codes, in shards compressed whole. An int8 model with per-partition scales keeps
them in ``local_scales/`` ([*grid, tensors] float32, one Zarr chunk per shard, so a crop keeps,
rewrites or drops it with its shard). A partition's entry in ``partitions/`` is the crc32c of its
chunk, or, where it has scales of its own, of its codes followed by its scales (little-endian
float32): a chunk or a scale row from another model or position is refused either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Layout
from .location import Location, LocationError
from .manifest import ModelDirError
from .quantize import SCALES_ARRAY, Codes, Quantization
from .shards import ShardedArray, ShardError, ShardGrid, _quiet, crc32c, dumps

LOCAL = "local"


@dataclass
class Shard:
    """One shard's partitions as stored: codes [slots, width], present [slots], checksums
    [slots] (what ``partitions/`` holds, 0 where absent) and per-partition scales
    [slots, tensors] (int8 per-partition only)."""

    codes: np.ndarray
    present: np.ndarray
    crcs: np.ndarray
    scales: np.ndarray | None = None

    def keep(self, kept: np.ndarray) -> "Shard":
        """The same shard holding only the slots ``kept`` (a subset of ``present``)."""
        crcs = np.where(kept, self.crcs, 0).astype(np.uint32)
        return Shard(self.codes, kept, crcs, self.scales)


class LocalWeights:
    """``local/`` (and ``local_scales/``) of a model directory at ``location``; or, named
    ``name``, another float32 per-partition array (a checkpoint's Adam moment)."""

    def __init__(self, location: Location, shards: ShardGrid, layout: Layout,
                 quant: Quantization | None, constants=(), name: str = LOCAL):
        self.location, self.shards, self.layout, self.quant = location, shards, layout, quant
        self.codes = quant.codes(layout, constants) if quant else Codes(layout, "float32", ())
        width = self.codes.width if quant else layout.width
        self.array = ShardedArray(location.child(name), shards, width,
                                  quant.dtype if quant else "float32",
                                  quant.compressor if quant else None)
        self._scales = None

    @property
    def per_partition(self) -> bool:
        return self.quant is not None and self.quant.per_partition

    # -- reading ---------------------------------------------------------------------------------
    def read(self, shard: int) -> Shard:
        """Shard ``shard`` whole, every chunk (and scale row) checked against its own crc32c;
        ``crcs`` are what ``partitions/`` must hold for them."""
        codes, present, crcs = self.array.read_shard(shard)
        scales = self.read_scales(shard) if self.per_partition else None
        if scales is not None:
            crcs = np.where(present, bound_crcs(codes, scales), 0).astype(np.uint32)
        return Shard(codes, present, crcs, scales)

    def read_slots(self, shard: int, slots: np.ndarray, whole: bool) -> tuple[np.ndarray, np.ndarray]:
        """float32 rows [n, P] of ``slots`` and their checksums [n]: by byte range unless
        ``whole`` (or the shard is compressed, or has scales of its own)."""
        if whole or self.quant is not None:
            got = self.read(shard)
            if not got.present[slots].all():
                raise ShardError(f"{self.array.location}/{self.shards.key(shard)}: a partition "
                                 "the model lists is not in its shard")
            scales = None if got.scales is None else got.scales[slots]
            return self.decode(got.codes[slots], scales), got.crcs[slots]
        values, crcs = self.array.read_slots(shard, slots)
        return values, crcs

    def decode(self, codes: np.ndarray, scales: np.ndarray | None = None) -> np.ndarray:
        """float32 rows from codes (and per-partition ``scales``)."""
        if self.quant is None:
            return np.asarray(codes, dtype=np.float32)
        return self.codes.decode(codes, scales if self.per_partition else self.quant.local_scales)

    def read_scales(self, shard: int) -> np.ndarray:
        """The per-partition scales of ``shard``'s slots: float32 [slots, tensors] (zeros where
        a slot lies outside the grid)."""
        try:
            values = self._scales_array()[self._region(shard)]
        except Exception as exc:  # a damaged chunk fails its crc32c or does not decompress
            raise ModelDirError(f"{self.location}/{SCALES_ARRAY}: shard {self.shards.key(shard)}'s "
                                f"scales are damaged ({str(exc).splitlines()[0][:120]})") from None
        out = np.zeros(self.shards.block + (self.codes.tensors,), dtype=np.float32)
        out[tuple(slice(0, n) for n in values.shape[:-1])] = values
        return out.reshape(self.shards.slots, -1)

    def _scales_array(self):
        if self._scales is None:
            import zarr

            try:
                with _quiet():
                    self._scales = zarr.open_array(store=self.location.zarr_store(), path=SCALES_ARRAY,
                                                   mode="r", zarr_format=3)
            except Exception as exc:
                raise ModelDirError(f"{self.location}/{SCALES_ARRAY} is missing or damaged "
                                    f"({str(exc).splitlines()[0][:120]})") from None
            if self._scales.shape != self.shards.factors + (self.codes.tensors,) \
                    or self._scales.dtype != np.float32:
                raise ModelDirError(f"{self.location}/{SCALES_ARRAY}: shape {self._scales.shape} "
                                    f"{self._scales.dtype}, not the grid's float32 scales")
        return self._scales

    def _region(self, shard: int) -> tuple[slice, ...]:
        """The part of the grid that shard ``shard`` covers (clipped at its edge), all tensors."""
        start = np.asarray(np.unravel_index(int(shard), self.shards.shards)) * np.asarray(self.shards.block)
        stop = np.minimum(start + np.asarray(self.shards.block), np.asarray(self.shards.factors))
        return tuple(slice(int(a), int(b)) for a, b in zip(start, stop)) + (slice(None),)

    # -- writing ---------------------------------------------------------------------------------
    def quantize(self, values: np.ndarray, clip: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """Codes [n, width] of float32 rows [n, P] and, per-partition, their scales [n, T];
        ``clip``: a per-tensor model's values beyond its scales are clipped to them."""
        if self.quant is None:
            return np.asarray(values, dtype=np.float32), None
        if self.per_partition:
            scales = self.codes.scales(values)
            return self.codes.encode(values, scales), scales
        return self.codes.encode(values, self.quant.local_scales, clip), None

    def write(self, shard: int, data: Shard, sync_to_disk: bool = False) -> np.ndarray:
        """Write ``data`` as shard ``shard`` (and its scales); returns the checksums [slots]."""
        key = self.shards.key(shard)
        blob, chunk_crcs = self.array.encode(data.codes, data.present)
        crcs = np.zeros(self.shards.slots, dtype=np.uint32)
        crcs[data.present] = chunk_crcs
        if self.per_partition:
            scales = np.where(data.present[:, None], data.scales, 0).astype(np.float32)
            self.location.child(SCALES_ARRAY).write(key, self._scales_chunk(scales))
            crcs = np.where(data.present, bound_crcs(data.codes, scales), 0).astype(np.uint32)
        self.array.location.write(key, blob, sync_to_disk)
        return crcs

    def _scales_chunk(self, scales: np.ndarray) -> bytes:
        """The encoded ``local_scales`` chunk of one shard from its scales [slots, T]."""
        import zarr
        from zarr.storage import MemoryStore

        store = MemoryStore()
        array = zarr.create_array(store, **self._scales_spec())
        array[tuple(slice(0, b) for b in self.shards.block)] = scales.reshape(
            self.shards.block + (-1,))
        return store._store_dict[self.shards.key(0)].to_bytes()

    def _scales_spec(self) -> dict:
        from zarr.codecs import BytesCodec, Crc32cCodec, ZstdCodec

        t = self.codes.tensors
        return dict(shape=tuple(self.shards.block) + (t,), dtype="float32",
                    chunks=tuple(self.shards.block) + (t,), serializer=BytesCodec(),
                    compressors=[ZstdCodec(level=self.quant.level), Crc32cCodec()], fill_value=0,
                    config={"write_empty_chunks": True})

    def link(self, source: "LocalWeights", shard: int) -> None:
        """Shard ``shard`` of ``source`` here, unchanged (and its scales)."""
        key = self.shards.key(shard)
        self.array.location.link(source.array.location, key)
        if self.per_partition:
            self.location.child(SCALES_ARRAY).link(source.location.child(SCALES_ARRAY), key)

    def delete(self, shard: int) -> None:
        key = self.shards.key(shard)
        self.array.location.delete(key)
        if self.per_partition:
            self.location.child(SCALES_ARRAY).delete(key)

    def write_metadata(self) -> None:
        """The arrays' zarr.json: dtype, codecs and (quantized) what a reader needs to decode."""
        attributes = None
        if self.quant is not None:
            attributes = {"distlg": {"quantization": {**self.quant.header(),
                                                      **self.quant.part(self.codes, local=True)}}}
        self.location.write(f"{LOCAL}/zarr.json", self.array.metadata(attributes))
        if self.per_partition:
            import json

            import zarr
            from zarr.storage import MemoryStore

            store = MemoryStore()
            spec = {**self._scales_spec(), "shape": self.shards.factors + (self.codes.tensors,)}
            zarr.create_array(store, **spec, attributes={"distlg": {
                "tensors": [name for name in self.layout.shapes],
                "rule": "local/'s codes of tensor t of a partition times its scale t here"}})
            doc = json.loads(store._store_dict["zarr.json"].to_bytes())
            self.location.write(f"{SCALES_ARRAY}/zarr.json", dumps(doc, compact=True))

    def copy_metadata(self, source: "LocalWeights") -> None:
        """The arrays' zarr.json from ``source`` (same codes, same grid)."""
        names = [LOCAL] + ([SCALES_ARRAY] if self.per_partition else [])
        for name in names:
            data = source.location.read(f"{name}/zarr.json")
            if data is None:
                raise LocationError(f"{source.location}/{name}/zarr.json is missing")
            self.location.write(f"{name}/zarr.json", data)


def bound_crcs(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """crc32c of each row's codes followed by its scales (little-endian float32): uint32 [n]."""
    codes = np.ascontiguousarray(codes)
    scales = np.ascontiguousarray(scales, dtype="<f4")
    return np.fromiter((crc32c(c.tobytes() + s.tobytes()) for c, s in zip(codes, scales)),
                       dtype=np.uint32, count=len(codes))
