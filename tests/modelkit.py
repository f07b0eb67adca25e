"""Small models and signals shared by the model-directory, crop, render and extend tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from distlg.data.signal import SignalInfo
from distlg.geometry import Box, PartitionGrid
from distlg.modeldir.files import write_files_model
from distlg.modeldir.format import ModelDir
from distlg.nn.model import INR, Architecture
from distlg.training.checkpoint import write_model
from distlg.training.distributed import World

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def bikes_clip(frames: int = 16, size: int = 32) -> np.ndarray:
    """The first ``frames`` frames of bikes.mp4, centre square resized to ``size``: uint8
    [frames, size, size, 3]."""
    import imageio.v3 as iio
    from PIL import Image

    out = []
    for frame in iio.imiter(SHARED / "bikes.mp4", plugin="pyav"):
        h, w = frame.shape[:2]
        square = frame[:, (w - h) // 2:(w + h) // 2]
        out.append(np.asarray(Image.fromarray(square).resize((size, size), Image.BILINEAR)))
        if len(out) == frames:
            break
    return np.stack(out)


def random_model(path: Path, shape: tuple[int, ...], factors: tuple[int, ...], kind: str,
                 channels: int = 3, overlaps: tuple[int, ...] = (), seed: int = 0,
                 dtype: str = "uint8", value_range=(0.0, 255.0), fmt: str = "shards",
                 workers: int = 1, meta: dict | None = None) -> Path:
    """A model directory holding a freshly initialised Local-Global SIREN (no training): enough
    wherever only its structure and bit-exact behaviour matter. ``fmt``: "shards" (format 2,
    in the shards a ``workers``-worker run writes) or "safetensors" (format 1)."""
    grid = PartitionGrid(shape, factors, overlaps)
    arch = Architecture("local-global", len(shape), channels, hidden_layers=2, local_width=8,
                        global_width=12)
    model = INR(arch, range(grid.num_partitions), seed=seed)
    info = SignalInfo(kind, shape, channels, np.dtype(dtype), value_range,
                      **SignalInfo.facts(meta or {}))
    if fmt == "safetensors":
        path.mkdir(parents=True)
        write_files_model(path, grid, arch, info, model.global_state(),
                          ((p, model.local_state(p)) for p in range(grid.num_partitions)))
        return path
    return write_model(path, model, World(), grid, info, world_size=workers)


def subset(model: INR, pids) -> INR:
    """A new model holding only ``pids`` of ``model`` (copies of their weights and the global
    branch)."""
    out = INR(model.arch, pids, init=False).to(model.coord_scale.device)
    out.load_global(model.global_state())
    for p in pids:
        out.load_local(p, model.local_state(p))
    return out


def sample_box(grid: PartitionGrid, pid: int) -> Box:
    """Halo-grown box of ``pid``, shifted inward at the borders to keep its size: the plain
    reference for ``PartitionGrid.sample_starts``."""
    out = []
    for (a, b), o, extent in zip(grid.box(pid), grid.overlaps, grid.padded_shape):
        a, b = a - o, b + o
        if a < 0:
            a, b = 0, b - a
        if b > extent:
            a, b = a - (b - extent), extent
        out.append((a, b))
    return tuple(out)


def owner(grid: PartitionGrid, positions: np.ndarray) -> np.ndarray:
    """Id of the partition whose un-grown box holds each integer position [..., ndim]."""
    index = np.asarray(positions) // np.asarray(grid.part_shape)
    return np.ravel_multi_index(tuple(np.moveaxis(index, -1, 0)), grid.factors)



def assert_same_stream(a, b, grid: PartitionGrid, pids, n: int, steps: int) -> None:
    """Streaming samplers over signals ``a`` and ``b`` (chunk by chunk, 2 steps per window)
    give identical batches for ``steps`` steps."""
    import torch

    from distlg.data.stream import StreamingSampler

    samplers = [StreamingSampler(s, grid, pids, n, seed=3, window=2) for s in (a, b)]
    try:
        for step in range(steps):
            assert torch.equal(samplers[0].batch(step).values, samplers[1].batch(step).values)
    finally:
        for sampler in samplers:
            sampler.close()


def partition_object(path: Path, pid: int) -> Path:
    """The file holding partition ``pid``'s weights: its file (format 1) or its shard."""
    md = ModelDir.open(path)
    if md.version == 1:
        return path / md.entries[pid]["file"]
    shard, _ = md.shards.locate([pid])
    return path / "local" / md.shards.key(int(shard[0]))


def damage(path: Path, pid: int) -> Path:
    """Change one byte of partition ``pid``'s weights on disk (format 2: inside its chunk;
    format 1: the end of its file); returns the file changed."""
    target = partition_object(path, pid)
    data = bytearray(target.read_bytes())
    md = ModelDir.open(path)
    if md.version == 1:
        data[-1] ^= 1
    else:
        _, slot = md.shards.locate([pid])
        index = np.frombuffer(bytes(data[-(16 * md.shards.slots + 4):-4]), dtype="<u8").reshape(-1, 2)
        data[int(index[int(slot[0]), 0]) + 1] ^= 1
    target.write_bytes(bytes(data))
    return target


def stored_partitions(model: Path) -> list[int]:
    """The partitions whose bytes are on disk, from the shards' indexes (format 2)."""
    md = ModelDir.open(model)
    out = []
    for shard in range(int(np.prod(md.shards.shards))):
        path = model / "local" / md.shards.key(shard)
        if path.is_file():
            tail = path.read_bytes()[-(16 * md.shards.slots + 4):-4]
            held = np.frombuffer(tail, dtype="<u8").reshape(-1, 2)[:, 0] != np.iinfo(np.uint64).max
            out += md.shards.partitions(shard)[held].tolist()
    return sorted(out)
