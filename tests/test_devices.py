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

from distlg import parallel
from distlg.config import Config
from distlg.data.sources.builtin import builtin
from distlg.nn import fused
from distlg.nn.model import INR, Architecture
from distlg.parallel import CollectiveDeviceError, GlobalGradBucket, World
from distlg.plan import make_plan


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
    from distlg.train import _evaluate

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
    from distlg.train import train

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
    from distlg.train import train

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
    from distlg.step import autograd_forward_backward

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
    sse = autograd_forward_backward(ours, x, y, scale, precision)
    assert [p.grad.data_ptr() for p in ours.global_parameters()] == views
    assert bucket.buffer.abs().sum() > 0
    tol = 1e-4 if precision == "fp32" else 0.1
    assert abs(sse.item() / sse_ref.item() - 1) < tol
    for (name, p), (_, q) in zip(ref.named_tensors(), ours.named_tensors()):
        err = ((p.grad - q.grad).abs().max() / p.grad.abs().max()).item()
        assert err < tol * 10, f"{name}: {err:.1e}"
