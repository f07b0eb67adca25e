"""The samplers: exact per-partition counts, halo clipping at the borders, the resident and
streaming modes (identical batches, bounded reads) and training through a store."""

import math

import numpy as np
import pytest
import torch
from modelkit import sample_box

from distlg.config import Config
from distlg.data.draws import SamplerError
from distlg.data.ingest import IngestOptions, ingest
from distlg.data.sampler import make_sampler
from distlg.data.signal import Signal
from distlg.data.stream import StreamingSampler
from distlg.geometry import PartitionGrid, shard
from distlg.training.trainer import train


class Recording:
    """An in-memory array with a chunk shape that records every box read from it."""

    def __init__(self, array: np.ndarray, chunks):
        self.array, self.shape, self.dtype = array, array.shape, array.dtype
        self.chunks = tuple(chunks) + (array.shape[-1],)
        self.reads: list[tuple] = []

    def __getitem__(self, key):
        self.reads.append(tuple((s.start, s.stop) for s in key[:len(self.shape) - 1]))
        return self.array[key]


def random_signal(shape=(30, 17, 21), channels=2, chunks=(4, 5, 6), seed=0) -> tuple[Signal, np.ndarray]:
    data = np.random.default_rng(seed).integers(0, 256, shape + (channels,), dtype=np.uint8)
    return Signal(Recording(data, chunks), "volume", (0.0, 255.0)), data


GRID = PartitionGrid((30, 17, 21), (4, 3, 2), (2, 1, 3))
"""Padded on two axes (30 -> 32, 17 -> 18), with halos."""


def samplers(signal: Signal, grid: PartitionGrid, pids, n: int, seed: int = 0):
    """The same shard in both modes (a budget over and under its region)."""
    resident = make_sampler(signal, grid, pids, n, seed, memory_budget=1 << 30)
    streaming = StreamingSampler(signal, grid, pids, n, seed, window=3)
    assert (resident.mode, streaming.mode) == ("resident", "streaming")
    return resident, streaming


@pytest.mark.parametrize("budget", [1 << 30, 1 << 10])  # resident, streaming
def test_a_negative_seed_is_refused_not_cast(budget):
    """Seeds key uint64 hashes here and the model's generators: both ask for seed >= 0."""
    signal, _ = random_signal()
    with pytest.raises(SamplerError, match="seed must be >= 0, got -1"):
        make_sampler(signal, GRID, [0, 1], 8, seed=-1, memory_budget=budget)


def test_modes_follow_the_memory_budget():
    signal, _ = random_signal()
    region = 30 * 17 * 21 * 2
    pids = list(range(GRID.num_partitions))
    assert make_sampler(signal, GRID, pids, 10, memory_budget=region).mode == "resident"
    streaming = make_sampler(signal, GRID, pids, 10, memory_budget=region - 1)
    assert streaming.mode == "streaming" and streaming.resident_bytes < region
    streaming.close()
    with pytest.raises(SamplerError, match="full-batch"):
        make_sampler(signal, GRID, pids, None, memory_budget=region - 1)
    with pytest.raises(SamplerError, match="needs at least"):
        make_sampler(signal, GRID, pids, 50, memory_budget=1000)


@pytest.mark.parametrize("mode", ["resident", "streaming"])
def test_exact_counts_and_values_inside_each_sampling_box(mode):
    signal, data = random_signal()
    pids = [0, 5, 7, 12, 23]
    sampler = dict(zip(["resident", "streaming"], samplers(signal, GRID, pids, 37)))[mode]
    for step in (0, 1, 2, 3, 7, 8, 2, 30):
        batch, pos = sampler.batch(step), sampler.positions(step)
        assert tuple(batch.coords.shape) == (5, 37, 3) and tuple(batch.values.shape) == (5, 37, 2)
        truth = signal.normalise(data[tuple(np.moveaxis(pos, -1, 0))])
        assert np.array_equal(batch.values.numpy(), truth)
        for row, pid in enumerate(pids):
            box = np.asarray(sample_box(GRID, pid))
            inside = np.minimum(box, np.asarray(GRID.shape)[:, None])  # clamped into the signal
            assert (pos[row] >= np.minimum(inside[:, 0], np.asarray(GRID.shape) - 1)).all()
            assert (pos[row] < inside[:, 1]).all()
    sampler.close()


@pytest.mark.parametrize("mode", ["resident", "streaming"])
def test_border_halos_shift_inward_and_clamp_into_the_signal(mode):
    signal, _ = random_signal()
    first, last = 0, GRID.num_partitions - 1
    sampler = dict(zip(["resident", "streaming"], samplers(signal, GRID, [first, last], 128)))[mode]
    seen = [set(), set()]
    for step in range(200):
        pos = sampler.positions(step)
        for row in range(2):
            seen[row].update(map(tuple, pos[row].tolist()))
    sampler.close()
    # partition 0: [0, 8+4) x [0, 6+2) x [0, 11+6): the halo goes inward only
    assert seen[0] == set(np.ndindex(12, 8, 17))
    # the last partition's grown box, shifted inward to keep its size, (20..32, 10..18, 5..22),
    # is clamped into the 30x17x21 signal
    expected = {(z, y, x) for z in range(20, 30) for y in range(10, 17) for x in range(5, 21)}
    assert seen[1] == expected


def test_full_batch_holds_every_position_of_each_box_once():
    signal, _ = random_signal()
    sampler = make_sampler(signal, GRID, [0, 23], None)
    pos = sampler.positions(0)
    assert sampler.mode == "full" and pos.shape[1] == math.prod(GRID.sample_shape)
    for row, pid in enumerate([0, 23]):
        (a0, b0), (a1, b1), (a2, b2) = sample_box(GRID, pid)
        grown = np.stack(np.meshgrid(np.arange(a0, b0), np.arange(a1, b1), np.arange(a2, b2),
                                     indexing="ij"), axis=-1).reshape(-1, 3)
        assert np.array_equal(pos[row], GRID.clamp(grown))


def test_streaming_yields_the_resident_batches():
    signal, _ = random_signal()
    pids = list(range(GRID.num_partitions))
    resident, streaming = samplers(signal, GRID, pids, 41, seed=3)
    for step in [0, 1, 2, 3, 4, 5, 6, 9, 13, 4, 100]:  # in order, skipping ahead and back
        a, b = resident.batch(step), streaming.batch(step)
        assert np.array_equal(a.coords, b.coords) and np.array_equal(a.values, b.values), step
    streaming.close()


def test_streaming_reads_only_chunks_of_its_boxes_once_per_window():
    signal, _ = random_signal()
    pids = shard(GRID, 3)[1]
    sampler = StreamingSampler(signal, GRID, pids, 50, window=4)
    for step in range(12):
        sampler.batch(step)
    sampler.close()
    reads = signal.data.reads
    chunks = np.asarray(signal.data.chunks[:-1])
    boxes = [np.minimum(np.asarray(sample_box(GRID, p)), np.asarray(GRID.shape)[:, None]) for p in pids]
    for read in reads:
        lo, hi = np.asarray(read).T
        assert (lo % chunks == 0).all() and ((hi - lo <= chunks)).all()  # one chunk at a time
        assert any(((lo < box[:, 1]) & (hi > box[:, 0])).all() for box in boxes)
    # a window reads its chunks in storage order: a new window starts where the order restarts
    restarts = sum(b <= a for a, b in zip(reads, reads[1:]))
    windows = sampler.stats["windows"]  # 0-2, and 3 if its prefetch started before close()
    assert restarts + 1 == windows and windows in (3, 4)
    assert len(set(reads)) <= len(reads) / windows + 1  # so no chunk twice in one window


def test_one_or_two_workers_draw_the_same_samples():
    signal, _ = random_signal()
    pids = list(range(GRID.num_partitions))
    whole = StreamingSampler(signal, GRID, pids, 30, seed=5, window=2)
    halves = [StreamingSampler(signal, GRID, part, 30, seed=5, window=w)
              for part, w in zip(shard(GRID, 2), (3, 5))]
    for step in (0, 1, 6, 7):
        full = whole.batch(step)
        for part, sampler in zip(shard(GRID, 2), halves):
            b = sampler.batch(step)
            assert np.array_equal(full.values[part], b.values) and np.array_equal(full.coords[part], b.coords)
    for s in [whole, *halves]:
        s.close()


def test_every_worker_yields_a_batch_for_every_step():
    """Shards of unequal sizes and contents serve every step, so collectives never hang."""
    signal, _ = random_signal()
    grid = PartitionGrid((30, 17, 21), (5, 1, 1))  # 5 partitions over 2 workers: 3 and 2
    steps = 0
    shards = shard(grid, 2)
    for pids in shards:
        sampler = StreamingSampler(signal, grid, pids, 10, window=3)
        shapes = {tuple(sampler.batch(step).values.shape) for step in range(10)}
        steps += 10
        assert shapes == {(len(pids), 10, 2)}
        sampler.close()
    assert [len(p) for p in shards] == [3, 2] and steps == 20


def test_training_through_a_store_streams_to_the_resident_psnr(tmp_path, capsys):
    """A small volume, a tiny budget: streaming trains exactly as resident does."""
    z, y, x = np.meshgrid(*[np.linspace(0, 1, 40)] * 3, indexing="ij")
    np.save(tmp_path / "v.npy", (127.5 + 100 * np.sin(6 * z) * np.cos(5 * y + 2 * x)).astype(np.uint8))
    ingest(tmp_path / "v.npy", tmp_path / "v.zarr", IngestOptions(chunks=[10, 10, 10], progress=False))
    common = dict(path=str(tmp_path / "v.zarr"), tensorboard=False, progress=False, factors=[2, 2, 2],
                  params=6000, steps=150, samples_per_partition=64, lr=3e-4)
    results = {}
    for name, budget in (("resident", 1.0), ("streaming", 40_000 / 2**30)):  # region: 64,000 B
        config = Config().replace(out=str(tmp_path / name), memory_budget_gib=budget, **common)
        results[name] = train(config).final.psnr
        assert f"sampler {name}" in capsys.readouterr().out
    assert results["resident"] > 20
    assert abs(results["streaming"] - results["resident"]) < 0.5


@pytest.mark.parametrize("dtype, value_range", [(np.uint8, (0.0, 255.0)), (np.uint16, (3.0, 60000.0)),
                                                (np.float32, (-2.5, 7.25))])
def test_draws_on_the_device_equal_the_host_draws_bit_for_bit(dtype, value_range):
    """The resident sampler's device path (``DeviceDraws``: the hash in int64 arithmetic, the
    gather and the normalisation where the data lives; a GPU's path, run here on the CPU)
    gives exactly the host's batches: a padded, halo-grown 3-D grid, audio and an image, each
    worker's shard, several steps and seeds (one above 2^63 - 1 would be refused)."""
    from distlg.data.resident import ResidentSampler

    rng = np.random.default_rng(3)
    cases = [(GRID, "volume"), (PartitionGrid((1000,), (7,), (5,)), "audio"),
             (PartitionGrid((33, 47), (4, 3), (2, 2)), "image")]
    for grid, kind in cases:
        shape = grid.shape + (3,)
        data = (rng.random(shape) * 1000).astype(dtype) if dtype == np.float32 else \
            rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
        signal = Signal(data, kind, value_range)
        for pids in shard(grid, 2):
            for seed in (0, 12345, 2**62 + 7):
                host = ResidentSampler(signal, grid, pids, 37, seed, on_device=False)
                device = ResidentSampler(signal, grid, pids, 37, seed, on_device=True)
                assert device._draws is not None and host._draws is None
                for step in (0, 1, 999, 2**40 + 3):
                    a, b = host.batch(step), device.batch(step)
                    assert a.coords.dtype == b.coords.dtype and a.values.dtype == b.values.dtype
                    assert torch.equal(a.coords, b.coords), (kind, pids, seed, step)
                    assert torch.equal(a.values, b.values), (kind, pids, seed, step)
