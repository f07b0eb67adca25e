"""The global branch on a lattice (merge "bias", distlg's recipe) and sampled scoring."""

import math

import numpy as np
import pytest
import torch

from distlg.config import Config
from distlg.data.signal import Signal
from distlg.data.sources.builtin import builtin
from distlg.geometry import PartitionGrid
from distlg.nn import fused, lattice
from distlg.nn.model import INR, Architecture
from distlg.training.evaluation import evaluate, evaluate_sampled, score_subset
from distlg.training.plan import lattice_geometry, make_plan


def lattice_arch(grid: PartitionGrid, cells, out=2, local=9, glob=13) -> Architecture:
    return Architecture("local-global", grid.ndim, out, 2, local, glob, merge="bias",
                        **{**lattice_geometry(grid), "lattice": tuple(cells)})


GRIDS = [(PartitionGrid((90,), (3,), (4,)), (5,)),
         (PartitionGrid((40, 48), (4, 3), (2, 2)), (2, 3)),
         (PartitionGrid((12, 20, 24), (2, 2, 3), (1, 2, 2)), (1, 2, 2))]
SPARSE = [(PartitionGrid((90,), (3,), (4,)), (40,)),          # fine lattices: gathered
          (PartitionGrid((40, 48), (4, 3), (2, 2)), (9, 8)),
          (PartitionGrid((12, 20, 24), (2, 2, 3), (1, 2, 2)), (5, 6, 6))]


def inputs(grid, pids, n=23, seed=0):
    g = torch.Generator().manual_seed(seed)
    # coordinates a little beyond [-1, 1] too: halo samples outside a partition's box
    coords = torch.rand(len(pids), n, grid.ndim, generator=g) * 2.2 - 1.1
    values = torch.rand(len(pids), n, 2, generator=g) * 2 - 1
    return coords, values


@pytest.mark.parametrize("grid,cells", GRIDS + SPARSE)
def test_fused_step_equals_autograd(grid, cells):
    pids = [0, grid.num_partitions - 1] + ([1] if grid.num_partitions > 2 else [])
    model = INR(lattice_arch(grid, cells), pids, seed=2)
    with torch.no_grad():  # the output term starts at zero: give it something to carry
        model["global.out.weight"].normal_(0, 0.1)
    coords, values = inputs(grid, pids)
    ((model(coords) - values) ** 2).sum().mul(0.3).backward()
    reference = {n: p.grad.clone() for n, p in model.named_tensors()}
    model.zero_grad(set_to_none=True)
    sse = fused.forward_backward(model, coords, values, 0.3)
    assert float(sse) == pytest.approx(float(((model(coords) - values) ** 2).sum().detach()), rel=1e-5)
    for name, p in model.named_tensors():
        err = (p.grad - reference[name]).abs().max() / reference[name].abs().max().clamp_min(1e-12)
        assert err < 1e-4, name
    assert torch.allclose(fused.predict(model, coords), model(coords).detach(), atol=1e-5)


@pytest.mark.parametrize("grid,cells", GRIDS + SPARSE)
def test_a_subset_renders_bit_identically(grid, cells):
    arch = lattice_arch(grid, cells)
    full = INR(arch, range(grid.num_partitions), seed=4)
    keep = [grid.num_partitions - 1, 0]
    sub = INR(arch, keep, init=False)
    sub.load_global(full.global_state())
    for p in keep:
        sub.load_local(p, full.local_state(p))
    coords, _ = inputs(grid, keep)
    assert torch.equal(fused.predict(sub, coords), fused.predict(full, coords, keep))
    # local initialisation depends on the partition id alone
    alone = INR(arch, [keep[0]], seed=4)
    assert all(torch.equal(alone.local_state(keep[0])[n], t) for n, t in full.local_state(keep[0]).items())


def test_weights_interpolate_multilinear_functions_exactly():
    grid, cells = GRIDS[2]
    arch = lattice_arch(grid, cells)
    pids = torch.arange(grid.num_partitions)
    points = lattice.lattice_points(arch, pids)                       # [P, K, 3]
    coords = torch.rand(len(pids), 50, 3) * 2 - 1
    w = lattice.interp_weights(arch, coords, pids)
    assert torch.allclose(w.sum(-1), torch.ones(()), atol=1e-6) and (w >= 0).all()
    f = lambda x: 0.3 + x[..., 0] - 2 * x[..., 1] + 0.5 * x[..., 2]  # noqa: E731 - linear
    est = torch.bmm(w, f(points).unsqueeze(-1)).squeeze(-1)
    index = lattice.partition_index(arch, pids).float()
    size, origin = torch.tensor(arch.part_size), torch.tensor(arch.cell_origin)
    lo = origin + index * size
    own = ((coords >= lo[:, None]) & (coords <= (lo + size)[:, None])).all(-1)
    assert own.any() and not own.all()
    assert torch.allclose(est[own], f(coords)[own], atol=1e-5)
    # a sample outside its partition's box (a halo sample) takes the box's edge values
    clamped = torch.maximum(torch.minimum(coords, (lo + size)[:, None]), lo[:, None])
    assert torch.allclose(w, lattice.interp_weights(arch, clamped, pids), atol=1e-6)


@pytest.mark.parametrize("grid,cells", GRIDS + SPARSE)
def test_gathering_cell_corners_is_the_dense_interpolation(grid, cells):
    """Coarse lattices interpolate densely, fine ones gather each sample's 2^d cell corners;
    the corners and weights gathered are the nonzero entries of the dense weights."""
    arch = lattice_arch(grid, cells)
    assert lattice.is_sparse(cells) == ((grid, cells) in SPARSE)
    pids = torch.arange(grid.num_partitions)
    coords, _ = inputs(grid, pids.tolist(), n=200)
    dense = lattice.interp_weights(arch, coords, pids)
    rows, weights = lattice.cell_corners(arch, coords, pids)
    assert rows.shape[-1] == 2 ** grid.ndim
    assert torch.allclose(torch.zeros_like(dense).scatter_add_(-1, rows, weights), dense, atol=1e-6)
    features = torch.randn(len(pids), lattice.corner_count(cells), 5)
    sparse = lattice.interpolate(features, lattice.interpolation(arch, coords, pids))
    assert torch.allclose(sparse, torch.bmm(dense, features), atol=1e-5)


def test_features_are_continuous_across_partition_borders():
    grid = PartitionGrid((40, 48), (4, 3))
    arch = lattice_arch(grid, (2, 3))
    model = INR(arch, range(grid.num_partitions), seed=1)
    a, b = 0, grid.pid((0, 1))                                  # neighbours along columns
    index = lattice.partition_index(arch, torch.tensor([b]))[0]
    border = arch.cell_origin[1] + index[1].item() * arch.part_size[1]
    rows = torch.linspace(arch.cell_origin[0] + 0.01, arch.cell_origin[0] + arch.part_size[0] - 0.01, 7)
    coords = torch.stack([rows, torch.full_like(rows, border)], -1)[None].expand(2, -1, -1)
    ids = torch.tensor([a, b])
    feats = torch.bmm(lattice.interp_weights(arch, coords, ids), model.lattice_features(ids))
    assert torch.allclose(feats[0], feats[1], atol=1e-5)


def test_default_lattice_stays_within_its_cost_limits():
    assert lattice.default_lattice((32, 32), 1024, 14, 32) == (4, 4)     # K = 25 <= 28
    assert lattice.default_lattice((50, 32, 32), 32, 24, 64) == (1, 1, 2)  # few samples: coarse
    assert lattice.default_lattice((9632,), 482, 42, 57) == (122,)        # 1-D: gathered, fine
    for part, n, w, g in [((12, 32, 32), 245, 11, 48), ((300,), 300, 40, 64), ((64, 64, 64), 5000, 30, 64),
                          ((9632,), 482, 42, 57), ((2000,), 5000, 10, 20)]:
        cells = lattice.default_lattice(part, n, w, g)
        sparse = lattice.is_sparse(cells)
        reads = lattice.SPARSE_FROM * 2 ** len(part) if sparse else lattice.corner_count(cells)
        assert reads <= max(2 ** len(part), 2 * w)
        point_cost = 3 * g * g + 4 * g * w
        assert math.prod(cells) * point_cost <= max(lattice.GLOBAL_COST * n * 3 * w * w, point_cost)
    assert lattice.default_lattice((4,), 4, 3, 3) == (1,)


def test_recipes():
    signal = builtin("astronaut@256x256")
    base = dict(path="builtin:astronaut@256x256", factors=[8, 8], params=49_152)
    plan = make_plan(Config().replace(**base), signal)
    assert plan.arch.merge == "bias" and plan.arch.on_lattice and plan.arch.global_width <= 64
    assert plan.arch.lattice == (4, 4)
    paper = make_plan(Config().replace(recipe="paper", **base), signal).arch
    assert (paper.merge, paper.local_width, paper.global_width, paper.lattice) == ("shared", 14, 37, ())
    big = make_plan(Config().replace(path="builtin:astronaut@256x256", factors=[8, 8],
                                     params=400_000), signal).arch
    assert big.global_width <= 64 and big.total_params(64) == pytest.approx(400_000, rel=0.05)
    capped = make_plan(Config().replace(max_global_width=20, **base), signal).arch
    assert capped.global_width <= 20


@pytest.mark.parametrize("shape,kind,settings", [
    ((64, 64, 3), "image", {}),                                        # dense interpolation
    ((9632 * 8, 1), "audio", {"sample_fraction": 0.05}),               # gathered (fine 1-D lattice)
    ((16, 64, 64, 1), "volume", {})])
def test_default_recipe_initialisation_is_independent_of_the_other_partitions(shape, kind, settings):
    """The default recipe's model: every partition's initial weights, and what it renders,
    depend on the seed and its own id only, not on which other partitions a worker holds."""
    signal = Signal(np.zeros(shape, np.uint8 if kind != "audio" else np.int16), kind,
                    (0, 255) if kind != "audio" else (-32768, 32767))
    plan = make_plan(Config().replace(**settings), signal)
    assert plan.arch.on_lattice and plan.grid.num_partitions >= 4
    every = INR(plan.arch, range(plan.grid.num_partitions), seed=5)
    keep = [plan.grid.num_partitions - 1, 1]
    alone = INR(plan.arch, keep, seed=5)
    for p in keep:
        assert all(torch.equal(t, alone.local_state(p)[n]) for n, t in every.local_state(p).items())
    assert all(torch.equal(t, alone.global_state()[n]) for n, t in every.global_state().items())
    coords = torch.rand(len(keep), 40, len(shape) - 1) * 2 - 1
    assert torch.equal(fused.predict(alone, coords), fused.predict(every, coords, keep))


def test_sampled_score_brackets_the_full_score(monkeypatch):
    import distlg.training.evaluation as metrics

    rng = np.random.default_rng(0)
    data = (rng.random((64, 64, 1)) * 255).astype(np.uint8)
    data[:32] //= 4                                        # partitions that differ in error
    signal = Signal.from_array(data, "image")
    grid = PartitionGrid((64, 64), (8, 8))
    arch = Architecture("per-partition", 2, 1, 1, 6)
    model = INR(arch, range(64), seed=0)
    monkeypatch.setattr(metrics, "SAMPLED_ABOVE", 100)
    monkeypatch.setattr(metrics, "SAMPLED_VALUES", 16 * 64)
    subset = score_subset(grid, 1, "auto")
    assert subset is not None and len(subset) == 16 and subset == score_subset(grid, 1, "sample")
    assert score_subset(grid, 1, "full") is None
    full = evaluate(model, grid, signal)
    est = evaluate_sampled(model, grid, signal, subset)
    lo, hi = est.psnr_interval
    assert est.sampled == (16, 64) and lo <= est.psnr <= hi
    assert lo - 0.5 <= full.psnr <= hi + 0.5
    assert math.isfinite(est.psnr) and "sampled: 16 of 64" in est.describe()
