"""The chaos run (``benchmarks/chaos.py``): a 2-worker training streaming a video over HTTP is
interrupted 10 times at random moments (kill -9 of a worker, SIGTERM of the group, the HTTP
server stopped for seconds, the checkpoint disk filled) and resumed each time; a render to
.zarr is killed 10 times and run again. Several minutes: ``pytest -m slow``."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from chaos import run_chaos  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.multiprocess]


@pytest.mark.timeout(3600)
def test_chaos_ends_where_an_uninterrupted_run_ends(tmp_path):
    chaos = run_chaos(tmp_path / "chaos", interruptions=10, steps=1200, seed=7)
    assert len(chaos.train) == 10
    for event in chaos.train:
        assert event.orphans == 0, event  # no worker outlives its group
        assert not event.corrupt, event  # no checkpoint a manifest names is damaged
        assert len(event.saw) <= 2 and not any(line.startswith("Traceback") for line in event.saw), \
            event  # each worker: at most one line, never a traceback of its own
        assert not any("HUNG" in line for line in event.launcher), event
    same, total = chaos.equal_tensors
    assert total and same == total  # bit-identical to the uninterrupted run
    assert len(chaos.render) == 10
    assert not any(event.corrupt for event in chaos.render)  # the name never appeared early
    assert chaos.render_equal  # byte for byte
