"""The Triton grouped-layer kernel against the torch path, forward and backward.

On a CPU this runs through Triton's interpreter (``TRITON_INTERPRET=1``, set here before Triton
is imported); on a GPU (benchmarks/gpu_check.sh) the compiled kernel runs.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
triton = pytest.importorskip("triton", reason="triton cannot be imported here")

from distlg.kernels.grouped_mlp import BLOCK_K, BLOCK_M, BLOCK_N, grouped_linear, torch_grouped_linear  # noqa: E402  # noqa: E402

pytestmark = pytest.mark.device  # runs on the GPU in benchmarks/gpu_check.sh
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# (P, n, K, M): first layers (K = 3), hidden and output layers, sizes on and off the blocks
SHAPES = [(3, 37, 3, 20), (2, BLOCK_N, BLOCK_K, BLOCK_M), (2, BLOCK_N + 5, 2 * BLOCK_K + 7, 55),
          (4, 9, 17, 3), (1, 130, 55, 55)]


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("sine", [True, False], ids=["sine", "linear"])
def test_kernel_matches_torch_forward_and_backward(shape, sine):
    p, n, k, m = shape
    g = torch.Generator().manual_seed(sum(shape))
    x = (torch.rand(p, n, k, generator=g) * 2 - 1).to(DEVICE)
    w = (torch.rand(p, k, m, generator=g) * 2 - 1).div(k).to(DEVICE)
    b = (torch.rand(p, m, generator=g) * 2 - 1).to(DEVICE)
    dy = (torch.rand(p, n, m, generator=g) * 2 - 1).to(DEVICE)
    w0 = 30.0 if sine else 1.0
    grads = []
    for fn in (grouped_linear, torch_grouped_linear):
        leaves = [t.clone().requires_grad_() for t in (x, w, b)]
        y = fn(*leaves, w0=w0, sine=sine)
        y.backward(dy)
        grads.append([y.detach()] + [t.grad for t in leaves])
    for name, ours, ref in zip(("y", "dx", "dW", "db"), *grads):
        assert relative(ours, ref) < 1e-5, f"{name}: {relative(ours, ref):.1e}"


def test_first_layer_needs_no_input_gradient():
    x = torch.rand(2, 20, 3, device=DEVICE)
    w = torch.rand(2, 3, 16, device=DEVICE, requires_grad=True)
    b = torch.rand(2, 16, device=DEVICE, requires_grad=True)
    grouped_linear(x, w, b, 30.0).sum().backward()
    assert w.grad is not None and b.grad is not None and x.grad is None


@pytest.mark.parametrize("arch,merge", [("local-global", "bias"), ("local-global", "shared"),
                                        ("per-partition-incode", "shared")])
def test_the_triton_policy_runs_the_models_forward_as_fp32_does(arch, merge):
    """``INR.forward`` with the Triton policy (``--kernel triton``): values and every
    gradient as with the float32 reference policy."""
    from distlg.geometry import PartitionGrid
    from distlg.kernels.policy import Triton
    from distlg.nn.layers import FP32
    from distlg.nn.model import INR, Architecture
    from distlg.training.plan import lattice_geometry

    grid = PartitionGrid((16, 16), (2, 2))
    geometry = lattice_geometry(grid, arch, merge)
    a = Architecture(arch, 2, 3, hidden_layers=1, local_width=9, global_width=7, merge=merge,
                     **{**geometry, **({"lattice": (2, 2)} if geometry else {})})
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(4, 37, 2, generator=g) * 2 - 1).to(DEVICE)
    y = (torch.rand(4, 37, 3, generator=g) * 2 - 1).to(DEVICE)
    results = []
    for policy in (Triton("fp32"), FP32):
        model = INR(a, range(4), seed=1).to(DEVICE)
        out = model(x, matmuls=policy)
        ((out - y) ** 2).sum().backward()
        results.append([out.detach()] + [p.grad for _, p in model.named_tensors()])
    for ours, ref in zip(*results):
        assert relative(ours, ref) < 1e-4
