import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from modelkit import owner, sample_box

from distlg.geometry import GeometryError, PartitionGrid, auto_factors, shard


@st.composite
def grids(draw, max_ndim=3):
    ndim = draw(st.integers(1, max_ndim))
    shape, factors, overlaps = [], [], []
    for _ in range(ndim):
        d = draw(st.integers(1, 40))
        c = draw(st.integers(1, d))
        part = math.ceil(d / c)
        if (c - 1) * part >= d:  # a factor that leaves a partition empty is rejected (tested below)
            c = math.ceil(d / part)
        o = draw(st.integers(0, max(0, (c * part - part) // 2)))
        shape.append(d), factors.append(c), overlaps.append(o)
    return PartitionGrid(tuple(shape), tuple(factors), tuple(overlaps))


def all_positions(shape):
    return np.stack(np.unravel_index(np.arange(math.prod(shape)), shape), axis=-1)


@settings(max_examples=200, deadline=None)
@given(grids())
def test_every_position_belongs_to_exactly_one_partition(grid):
    pos = all_positions(grid.shape)
    owners = owner(grid, pos)
    counts = np.zeros(grid.num_partitions, dtype=int)
    for pid in range(grid.num_partitions):
        box = grid.valid_box(pid)
        inside = np.all([(pos[:, i] >= a) & (pos[:, i] < b) for i, (a, b) in enumerate(box)], axis=0)
        assert np.all(owners[inside] == pid)
        counts[pid] = inside.sum()
    assert counts.sum() == len(pos)  # boxes tile the signal: no gap, no double ownership
    assert np.all(counts > 0)  # no empty partition


@settings(max_examples=200, deadline=None)
@given(grids())
def test_halo_boxes_keep_their_size_and_stay_inside(grid):
    for pid in range(grid.num_partitions):
        box, grown = grid.box(pid), sample_box(grid, pid)
        for (a, b), (ga, gb), o, size, extent in zip(box, grown, grid.overlaps, grid.sample_shape,
                                                     grid.padded_shape):
            assert gb - ga == size == (b - a) + 2 * o
            assert 0 <= ga <= a and b <= gb <= extent  # grows around the box, never outside
        assert tuple(grid.sample_starts([pid])[0]) == tuple(a for a, _ in grown)


@settings(max_examples=200, deadline=None)
@given(grids())
def test_id_index_box_round_trips(grid):
    for pid in range(grid.num_partitions):
        index = grid.index(pid)
        assert grid.pid(index) == pid
        box = grid.box(pid)
        centre = [(a + min(b, d) - 1) // 2 for (a, b), d in zip(box, grid.shape)]
        assert owner(grid, np.array(centre)) == pid
        assert grid.intersecting(grid.valid_box(pid)) == [pid]


@settings(max_examples=100, deadline=None)
@given(grids())
def test_padding_is_the_gap_to_a_multiple_of_the_factors(grid):
    for d, c, p, pad in zip(grid.shape, grid.factors, grid.part_shape, grid.padding):
        assert p * c == d + pad and 0 <= pad < p
    # padded positions clamp to the edge sample: edge padding
    far = np.array(grid.padded_shape) - 1
    assert tuple(grid.clamp(far)) == tuple(np.array(grid.shape) - 1)


def test_coordinates_do_not_depend_on_the_partitioning():
    a = PartitionGrid((30, 17), (3, 2))
    b = PartitionGrid((30, 17), (5, 17))
    pos = all_positions((30, 17))
    assert np.array_equal(a.normalise(pos), b.normalise(pos))
    c = a.normalise(pos)
    assert c.min() == -1 and c.max() == 1


@settings(max_examples=100, deadline=None)
@given(grids(), st.integers(1, 7))
def test_shards_are_balanced_disjoint_and_complete(grid, workers):
    if workers > grid.num_partitions:
        with pytest.raises(GeometryError):
            shard(grid, workers)
        return
    blocks = shard(grid, workers)
    sizes = [len(b) for b in blocks]
    assert max(sizes) - min(sizes) <= 1
    assert sorted(p for b in blocks for p in b) == list(range(grid.num_partitions))


def test_shards_are_spatially_compact():
    grid = PartitionGrid((250, 256, 256), (5, 8, 8))
    for workers in (2, 4, 8):
        for block in shard(grid, workers):
            index = np.array([grid.index(p) for p in block])
            extent = index.max(0) - index.min(0) + 1
            assert math.prod(extent) <= 2 * len(block)  # a near-box, not a scatter


def test_bad_grids_are_refused_with_a_reason():
    with pytest.raises(GeometryError, match="empty"):
        PartitionGrid((9,), (4,))  # 4 parts of 3 samples cover 12: the last would be empty
    with pytest.raises(GeometryError, match="samples"):
        PartitionGrid((4,), (5,))
    with pytest.raises(GeometryError, match="overlap"):
        PartitionGrid((8,), (1,), (1,))
    with pytest.raises(GeometryError, match="axes"):
        PartitionGrid((8, 8), (2,))


def test_auto_factors_follow_the_target_size():
    assert auto_factors((256, 256), 32) == (8, 8)
    assert auto_factors((512, 384), 32) == (16, 12)
    assert auto_factors((10,), 32) == (1,)
    assert auto_factors((4096, 4096), 32, max_factor=64) == (64, 64)
