import os
from pathlib import Path

import pytest
import torch

# Tests run on the CPU with few threads, so that two of them (or two workers) share the machine.
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared test data not found at {SHARED}")
    return SHARED


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    """Every device this machine has: tests that take it run on the CPU, and on CUDA when a GPU
    is present (``-m device`` selects them; benchmarks/gpu_check.sh runs them on a GPU)."""
    return torch.device(request.param)


@pytest.fixture(autouse=True)
def _float32_matmuls():
    """Each test starts with IEEE float32 matmuls on CUDA (``--precision`` sets these flags
    process-wide; a test that sets tf32 must not loosen the next one's comparisons)."""
    yield
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def pytest_collection_modifyitems(items):
    for item in items:
        if "device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.device)
