"""Interrupting a 2-worker job (gloo, ``accelerate launch``) as a user or the system would:
Ctrl-C of the whole process group, and kill -9 of the main worker while it writes checkpoints.

Afterwards every checkpoint that has a manifest is whole (each file as its sha256 says), and
resuming reaches exactly the model of a run that was never interrupted."""

import glob
import os
import signal
import subprocess
import time

import psutil
import pytest
import torch
from test_distributed import CONFIG, command, run  # noqa: E402  (tests/ is on the path)

from distlg.modeldir.format import ModelDir

pytestmark = pytest.mark.multiprocess
STEPS = ["--steps", "400"]


def _interrupt(tmp_path, how: str, every: str) -> subprocess.Popen:
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG)
    out = tmp_path / "run"
    job = subprocess.Popen(command(2, str(config), "--out", str(out), *STEPS, "--checkpoint-every",
                                   every), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, start_new_session=True)
    try:
        deadline = time.time() + 120
        while not glob.glob(str(out / "checkpoints" / "step-*" / "zarr.json")):
            assert job.poll() is None and time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.05)
        workers = [p for p in psutil.Process(job.pid).children(recursive=True)
                   if "distlg" in " ".join(p.cmdline())]
        time.sleep(0.2)
        if how == "ctrl-c":
            os.killpg(job.pid, signal.SIGINT)
        else:
            rank0 = next(p for p in workers if p.environ().get("RANK") == "0")
            os.kill(rank0.pid, signal.SIGKILL)
        job.communicate(timeout=60)
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    assert job.returncode != 0
    assert not [p for p in workers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    return job


@pytest.mark.parametrize("how,every", [("ctrl-c", "20"), ("kill -9 of rank 0", "1")])
def test_an_interrupted_job_leaves_whole_checkpoints_and_resumes_exactly(tmp_path, how, every):
    _interrupt(tmp_path, how, every)
    finished = sorted((tmp_path / "run" / "checkpoints").glob("step-*/zarr.json"))
    assert finished
    for manifest in finished:
        md = ModelDir.open(manifest.parent)
        md.verify()  # every partition against its checksums, and the global tensors
    resumed = run(tmp_path, 2, "run", *STEPS, "--checkpoint-every", "400", "--resume")
    reference = run(tmp_path, 2, "reference", *STEPS)
    a = ModelDir.open(resumed / "model").load()
    b = ModelDir.open(reference / "model").load()
    for (name, x), (_, y) in zip(a.named_tensors(), b.named_tensors()):
        assert torch.equal(x, y), name
