"""Every tensor on the device its consumer can use: collectives (NCCL takes CUDA tensors only),
the training step (no host round trip), and the step itself on each device present.

A CPU machine cannot run NCCL, so the NCCL world here is a test double: a ``World`` whose
process group says "nccl" and whose collectives refuse any tensor that is not a CUDA tensor,
as NCCL does. The 2-worker gloo suite (test_distributed) runs through the same check inside
``World.all_reduce_``.
"""

import os
import sys

import pytest
import torch
import torch.utils._pytree as pytree
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from distlg.config import Config
from distlg.data.sources.builtin import builtin
from distlg.nn import fused
from distlg.nn.model import INR, Architecture
from distlg.training import distributed as parallel
from distlg.training.distributed import CollectiveDeviceError, GlobalGradBucket, World
from distlg.training.plan import make_plan


class FakeNccl:
    """Stands in for torch.distributed under a 2-worker NCCL group: tensor collectives refuse
    non-CUDA tensors (the group's own rule, independent of World's check); object collectives
    return this worker's object for every rank (torch moves objects to the GPU itself)."""

    def __init__(self):
        self.calls = []

    def all_reduce(self, tensor, op=None):
        self.calls.append(("all_reduce", tensor.device.type))
        if tensor.device.type != "cuda":
            raise AssertionError(f"NCCL was handed a {tensor.device.type} tensor")
        tensor.mul_(2)

    def all_gather_object(self, out, obj):
        self.calls.append(("all_gather_object", None))
        out[:] = [obj] * len(out)

    def broadcast_object_list(self, box, src=0):
        self.calls.append(("broadcast_object_list", None))

    def barrier(self):
        self.calls.append(("barrier", None))


@pytest.fixture
def nccl_world(monkeypatch):
    fake = FakeNccl()
    for name in ("all_reduce", "all_gather_object", "broadcast_object_list", "barrier"):
        monkeypatch.setattr(parallel.dist, name, getattr(fake, name))
    return World(rank=0, size=2, local_size=2, backend="nccl"), fake


def test_final_evaluation_hands_nccl_no_cpu_tensor(nccl_world):
    """The evaluation's sums (host floats) must reach NCCL workers without a CPU tensor."""
    from distlg.training.trainer import _evaluate

    world, fake = nccl_world
    signal = builtin("camera@32x32")
    plan = make_plan(Config().replace(path="builtin:camera@32x32", factors=[2, 2], params=800),
                     signal)
    model = INR(plan.arch, range(4))
    config = Config()
    alone = _evaluate(model, plan, signal, World(), config, full=False)
    ev = _evaluate(model, plan, signal, world, config, full=False)  # both fake ranks hold the same sums
    assert fake.calls and all(kind != "all_reduce" or dev == "cuda" for kind, dev in fake.calls)
    assert ev.mse == pytest.approx(alone.mse, rel=1e-12)


def test_world_refuses_tensors_its_backend_cannot_reduce(nccl_world):
    world, _ = nccl_world
    with pytest.raises(CollectiveDeviceError, match="cpu tensor .* nccl"):
        world.all_reduce_(torch.zeros(3))
    gloo = World(rank=0, size=1, backend="gloo")
    gloo.check_device(torch.zeros(3))
    both = World(rank=0, size=1, backend="cpu:gloo,cuda:nccl")
    both.check_device(torch.zeros(3))
    assert world.sum_values([1.5, 2.0]) == [3.0, 4.0]


def test_bucket_keeps_the_step_statistics_on_the_device(device):
    model = INR(Architecture("local-global", 2, 1, 1, 4, 6), range(3)).to(device)
    bucket = GlobalGradBucket(model, World(device=device))
    sse = torch.tensor(2.5, dtype=torch.float64, device=device)
    out = bucket.reduce(sse, 3.0)
    assert isinstance(out, torch.Tensor) and out.device.type == device.type
    assert out.tolist() == [2.5, 3.0]


HOST_READS = ("item", "tolist", "__float__", "__int__", "__bool__", "numpy", "cpu")


def count_host_reads(monkeypatch, fn) -> int:
    """Calls of ``HOST_READS`` on any tensor while ``fn`` runs, except those of torch.optim
    (Adam reads its step counters, which it keeps on the CPU: no device round trip)."""
    count = [0]
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *a, _original=original, **k):
            caller = sys._getframe(1).f_code.co_filename
            if f"torch{os.sep}optim" not in caller:
                count[0] += 1
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    try:
        fn()
    finally:
        monkeypatch.undo()
    return count[0]


def test_training_steps_read_nothing_back_between_logs(tmp_path, monkeypatch):
    """40 steps read the device exactly once more than 20 do (the one extra log line)."""
    from distlg.training.trainer import train

    def run(steps):
        config = Config().replace(path="builtin:camera@32x32", factors=[2, 2], params=800,
                                  steps=steps, log_every=20, checkpoint_every=0,
                                  out=str(tmp_path / f"s{steps}"), tensorboard=False,
                                  progress=False)
        return lambda: train(config)

    short = count_host_reads(monkeypatch, run(20))
    long = count_host_reads(monkeypatch, run(40))
    assert long - short == 1, (short, long)


def test_fused_step_matches_autograd_on_every_device(device):
    torch.manual_seed(0)
    arch = Architecture("local-global", 3, 2, 2, 9, 13)
    ref = INR(arch, range(5), seed=1)
    dev = INR(arch, range(5), seed=1).to(device)
    x, y = torch.rand(5, 37, 3) * 2 - 1, torch.rand(5, 37, 2) * 2 - 1
    scale = 1.0 / y.numel()
    ((ref(x) - y) ** 2).sum().mul(scale).backward()
    fused.forward_backward(dev, x.to(device), y.to(device), scale)
    for (name, p), (_, q) in zip(ref.named_tensors(), dev.named_tensors()):
        err = ((p.grad - q.grad.cpu()).abs().max() / p.grad.abs().max()).item()
        assert err < 1e-4, f"{name}: {err:.1e}"


def test_training_on_every_device(tmp_path, device):
    from distlg.training.trainer import train

    config = Config().replace(path="builtin:camera@32x32", factors=[2, 2], params=800, steps=30,
                              samples_per_partition=64, device=device.type, checkpoint_every=0,
                              out=str(tmp_path / "run"), tensorboard=False, progress=False)
    result = train(config)
    assert next(result.model.parameters()).device.type == device.type
    assert result.final.psnr > 8  # a smoke test: 30 steps


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_autograd_step_matches_the_fused_step(device, precision):
    """The bf16/Triton step's formulation, checked in fp32 against the fused step; bf16 within
    bfloat16's rounding; the bucket's gradient views stay in place."""
    from distlg.training.steps import autograd_forward_backward, matmuls

    arch = Architecture("local-global", 3, 2, 2, 9, 13)
    ref = INR(arch, range(5), seed=1).to(device)
    ours = INR(arch, range(5), seed=1).to(device)
    bucket = GlobalGradBucket(ours, World(device=device))
    views = [p.grad.data_ptr() for p in ours.global_parameters()]
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(5, 37, 3, generator=g) * 2 - 1).to(device)
    y = (torch.rand(5, 37, 2, generator=g) * 2 - 1).to(device)
    scale = 1.0 / y.numel()
    sse_ref = fused.forward_backward(ref, x, y, scale)
    sse = autograd_forward_backward(ours, x, y, scale, matmuls(precision))
    assert [p.grad.data_ptr() for p in ours.global_parameters()] == views
    assert bucket.buffer.abs().sum() > 0
    tol = 1e-4 if precision == "fp32" else 0.1
    assert abs(sse.item() / sse_ref.item() - 1) < tol
    for (name, p), (_, q) in zip(ref.named_tensors(), ours.named_tensors()):
        err = ((p.grad - q.grad).abs().max() / p.grad.abs().max()).item()
        assert err < tol * 10, f"{name}: {err:.1e}"


class GraphHazards(TorchDispatchMode):
    """Records each operation a CUDA graph could not hold: one that reads a value back to the
    host or whose output size depends on values (``item``, ``nonzero``, ``unique``, a copy to
    the CPU), and one that takes host data into device work (a copy from host memory, a
    device tensor built from Python numbers, or a CPU tensor as an operand: its value would
    be frozen into the graph). Enter with ``with GraphHazards() as spy``."""

    READS = {"_local_scalar_dense", "nonzero", "unique_dim", "_unique2", "unique_consecutive",
             "masked_select", "is_nonzero"}
    BUILDERS = {torch.tensor, torch.as_tensor, torch.asarray}

    def __init__(self):
        super().__init__()
        self.found: list[str] = []
        spy = self

        class Builders(TorchFunctionMode):  # torch.tensor(data, device=...) dispatches no copy
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                device = kwargs.get("device")
                if func in spy.BUILDERS and device is not None and torch.device(device).type != "cpu":
                    spy.found.append(f"{func.__name__}: builds a device tensor from host data")
                return func(*args, **kwargs)

        self.builders = Builders()

    def __enter__(self):
        self.builders.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        super().__exit__(*exc)
        return self.builders.__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        leaves = pytree.tree_leaves((args, kwargs))
        devices = {t.device.type for t in leaves if isinstance(t, torch.Tensor)}
        target = kwargs.get("device")
        target = torch.device(target).type if target is not None else None
        on_device = devices - {"cpu"} or (target not in (None, "cpu"))
        if func.overloadpacket.__name__ in self.READS or (devices - {"cpu"} and target == "cpu"):
            self.found.append(f"{func}: reads the device from the host")
        elif "cpu" in devices and on_device:
            self.found.append(f"{func}: takes a host tensor into device work")
        return func(*args, **kwargs)


def graph_models() -> tuple[dict[str, Architecture], int]:
    """Each model family (the lattice one as ``distlg train`` plans it), and the partitions."""
    plan = make_plan(Config().replace(path="builtin:camera@48x40", factors=[3, 2], params=3000),
                     builtin("camera@48x40"))
    assert plan.arch.on_lattice
    return {"local-global (paper)": Architecture("local-global", 2, 1, 2, 9, 13),
            "local-global (lattice)": plan.arch,
            "per-partition": Architecture("per-partition", 2, 1, 2, 9),
            "siren": Architecture("siren", 2, 1, 2, 0, 17)}, plan.grid.num_partitions


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_steps_hold_nothing_a_cuda_graph_cannot(precision):
    """On the meta device (shapes without values, on any machine; it stands in for CUDA) a
    training step after the first copies nothing from the host, reads nothing back and hands
    no host tensor to device work: what capturing it as a CUDA graph (``--cuda-graph``)
    needs. Fails on an interpolation that builds its geometry as device tensors from Python
    lists, or lattice points found from the host on the first step."""
    from distlg.training.steps import training_step

    archs, count = graph_models()
    for name, arch in archs.items():
        pids = [0] if arch.arch == "siren" else range(count)
        model = INR(arch, pids, seed=1).to("meta")
        coords = torch.empty(len(pids), 40, 2, device="meta")
        values = torch.empty(len(pids), 40, 1, device="meta")
        step = training_step(precision, "torch", torch.device("meta"))
        step(model, coords, values, 0.01)
        with GraphHazards() as spy:
            step(model, coords, values, 0.01)
        assert spy.found == [], f"{name}: {spy.found[:3]}"


def test_cuda_graph_is_refused_where_it_cannot_run():
    from distlg.errors import DistlgError
    from distlg.training.steps import training_step

    with pytest.raises(DistlgError, match="needs a CUDA device"):
        training_step("fp32", "torch", torch.device("cpu"), cuda_graph=True)
    with pytest.raises(DistlgError, match="INCODE"):
        training_step("fp32", "torch", torch.device("cuda"), lambda: None, cuda_graph=True)


cuda_only = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def train_steps(arch: Architecture, pids, precision: str, graph: bool, steps: int = 5):
    """``steps`` Adam steps on fresh random batches; (losses, parameters, step function)."""
    from distlg.training.steps import training_step

    cuda = torch.device("cuda")
    model = INR(arch, pids, seed=1).to(cuda)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    step = training_step(precision, "torch", cuda, cuda_graph=graph)
    g = torch.Generator(device=cuda).manual_seed(0)
    losses = []
    for _ in range(steps):
        coords = torch.rand(len(pids), 40, 2, device=cuda, generator=g) * 2 - 1
        values = torch.rand(len(pids), 40, 1, device=cuda, generator=g)
        losses.append(step(model, coords, values, 0.01))
        optimizer.step()
        model.zero_grad(set_to_none=False)
    return torch.stack(losses), model, step


@cuda_only
@pytest.mark.device
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_step_replayed_as_a_cuda_graph_trains_as_the_step_does(precision):
    """5 steps of each model family replayed as a CUDA graph, a new batch each step, equal 5
    steps without a graph; gradients replaced after training are captured again."""
    archs, count = graph_models()
    for name, arch in archs.items():
        pids = [0] if arch.arch == "siren" else list(range(count))
        ref_losses, ref, _ = train_steps(arch, pids, precision, graph=False)
        losses, ours, step = train_steps(arch, pids, precision, graph=True)
        assert len(step.graphs) == 1 and not step.broken, name
        torch.testing.assert_close(losses, ref_losses, rtol=1e-5, atol=0, msg=name)
        for p, q in zip(ref.parameters(), ours.parameters()):
            torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)
        coords = torch.rand(len(pids), 40, 2, device="cuda") * 2 - 1
        values = torch.rand(len(pids), 40, 1, device="cuda")
        for model in (ref, ours):
            for p in model.parameters():
                p.grad = None
        sse_ref, sse = step.step(ref, coords, values, 0.01), step(ours, coords, values, 0.01)
        torch.testing.assert_close(sse, sse_ref, rtol=1e-5, atol=0, msg=name)
        for p, q in zip(ref.parameters(), ours.parameters()):
            torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-7, msg=name)


@cuda_only
@pytest.mark.device
def test_a_step_that_cannot_be_captured_runs_without_a_graph():
    """A step that reads a value back to the host cannot be captured: one warning, and the
    call's gradients are those of one step without a graph."""
    from distlg.training.steps import CudaGraphStep

    def reads_back(model, coords, values, scale):
        sse = fused.forward_backward(model, coords, values, scale)
        assert sse.item() >= 0  # a host read: not allowed while capturing
        return sse

    arch = Architecture("local-global", 2, 1, 2, 9, 13)
    ref, ours = (INR(arch, range(4), seed=1).cuda() for _ in range(2))
    coords = torch.rand(4, 40, 2, device="cuda") * 2 - 1
    values = torch.rand(4, 40, 1, device="cuda")
    step = CudaGraphStep(reads_back)
    with pytest.warns(UserWarning, match="cannot be captured as a CUDA graph"):
        sse = step(ours, coords, values, 0.01)
    assert step.broken
    assert sse.item() == fused.forward_backward(ref, coords, values, 0.01).item()
    for p, q in zip(ref.parameters(), ours.parameters()):
        assert torch.equal(p.grad, q.grad)


@cuda_only
@pytest.mark.device
def test_training_with_cuda_graph_matches_training_without(tmp_path):
    """``distlg train --cuda-graph`` (one process) ends where the same run without it ends."""
    from distlg.training.trainer import train

    runs = []
    for graph in (False, True):
        config = Config().replace(path="builtin:camera@64x64", factors=[2, 2], steps=30,
                                  device="cuda", cuda_graph=graph, checkpoint_every=0,
                                  out=str(tmp_path / f"g{graph}"), tensorboard=False, progress=False)
        runs.append(train(config))
    assert abs(runs[1].final.psnr - runs[0].final.psnr) < 1e-3
    for p, q in zip(runs[0].model.parameters(), runs[1].model.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-6)


def test_draws_on_the_device_take_nothing_from_the_host():
    """A resident shard drawn on the device (``DeviceDraws``; meta stands in for CUDA) copies
    nothing from the host and reads nothing back per step: only the step number goes in."""
    import numpy as np

    from distlg.data.resident import ResidentSampler
    from distlg.data.signal import Signal
    from distlg.geometry import PartitionGrid

    grid = PartitionGrid((30, 17, 21), (4, 3, 2), (2, 1, 3))
    data = np.random.default_rng(0).integers(0, 256, grid.shape + (3,), dtype=np.uint8)
    sampler = ResidentSampler(Signal(data, "volume", (0.0, 255.0)), grid, range(12), 40, 7,
                              device="meta", on_device=True)
    with GraphHazards() as spy:
        batch = sampler.batch(5)
    assert spy.found == []
    assert batch.coords.device.type == batch.values.device.type == "meta"


@cuda_only
@pytest.mark.device
def test_a_resident_shard_is_drawn_on_the_gpu_as_on_the_host():
    import numpy as np

    from distlg.data.resident import ResidentSampler
    from distlg.data.signal import Signal
    from distlg.geometry import PartitionGrid

    grid = PartitionGrid((30, 17, 21), (4, 3, 2), (2, 1, 3))
    data = np.random.default_rng(0).integers(0, 256, grid.shape + (3,), dtype=np.uint8)
    signal = Signal(data, "volume", (0.0, 255.0))
    host = ResidentSampler(signal, grid, range(12), 40, 7, on_device=False)
    gpu = ResidentSampler(signal, grid, range(12), 40, 7, device="cuda")  # the default on a GPU
    assert gpu._draws is not None
    for step in (0, 3, 10**6):
        a, b = host.batch(step), gpu.batch(step)
        assert b.coords.is_cuda and torch.equal(a.coords, b.coords.cpu())
        assert torch.equal(a.values, b.values.cpu())


@cuda_only
@pytest.mark.device
def test_a_streamed_shard_arrives_on_the_gpu_as_on_the_host():
    """Batches of the streaming sampler copied to the GPU on their own stream equal the host's,
    also when a step's kernels are still running as the next batch is copied."""
    import numpy as np

    from distlg.data.resident import ResidentSampler
    from distlg.data.signal import Signal
    from distlg.data.stream import StreamingSampler
    from distlg.geometry import PartitionGrid

    grid = PartitionGrid((30, 17, 21), (4, 3, 2), (2, 1, 3))
    data = np.random.default_rng(0).integers(0, 256, grid.shape + (3,), dtype=np.uint8)
    signal = Signal(data, "volume", (0.0, 255.0))
    host = ResidentSampler(signal, grid, range(12), 40, 7, on_device=False)
    streamed = StreamingSampler(signal, grid, list(range(12)), 40, 7, 1 << 20, "cuda", window=3)
    busy = torch.randn(4096, 4096, device="cuda")
    try:
        for step in range(8):
            for _ in range(4):  # keep the compute stream busy while the copy is issued
                busy = torch.sin(busy @ busy * 1e-3)
            b = streamed.batch(step)
            a = host.batch(step)
            assert torch.equal(a.coords, (b.coords * 1).cpu()) and torch.equal(a.values, (b.values * 1).cpu())
    finally:
        streamed.close()
