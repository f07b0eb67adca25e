import sys
from pathlib import Path

# The fault suite shares the small models of the test suite one folder up (tests/modelkit.py).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def pytest_collection_modifyitems(config, items):
    """Every test in this folder belongs to the fault suite (``pytest -m faults``)."""
    import pytest

    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here:
            item.add_marker(pytest.mark.faults)
