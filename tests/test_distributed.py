"""1 process vs 2 workers, killed workers, resuming on another number of workers.

Workers are real processes launched with ``accelerate launch`` (gloo on the CPU), as a user
would launch them.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from distlg.cli import main
from distlg.modeldir.format import ModelDir

pytestmark = pytest.mark.multiprocess

CONFIG = """
signal: {path: "builtin:camera@64x64"}
partition: {factors: [4, 4]}
model: {params: 3000}
train: {samples_per_partition: 64, lr: 0.001, seed: 7, log_every: 1}
run: {tensorboard: false, progress: false}
"""


def command(workers: int, *args: str) -> list[str]:
    if workers == 1:
        return [sys.executable, "-m", "distlg", "train", *args]
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
            "--num_processes", str(workers), "--num_machines", "1", "--mixed_precision", "no",
            "--dynamo_backend", "no", "--main_process_port", "0",
            "-m", "distlg", "train", *args]


def run(tmp: Path, workers: int, out: str, *args: str, timeout: int = 180) -> Path:
    config = tmp / "run.yaml"
    config.write_text(CONFIG)
    proc = subprocess.run(command(workers, str(config), "--out", str(tmp / out), *args),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return tmp / out


def losses(run_dir: Path) -> dict[int, float]:
    lines = (run_dir / "history.jsonl").read_text().splitlines()
    return {r["step"]: r["loss"] for r in map(json.loads, lines) if "loss" in r}


def assert_same_model(a: Path, b: Path, rel: float = 1e-5) -> None:
    ma, mb = ModelDir.open(a), ModelDir.open(b)
    assert ma.partition_ids == mb.partition_ids
    model_a = ma.load()
    model_b = mb.load()
    for (name, x), (_, y) in zip(model_a.named_tensors(), model_b.named_tensors()):
        err = ((x - y).abs().max() / x.abs().max()).item()
        assert err <= rel, f"{name}: relative difference {err:.2e}"


def assert_two_workers_match_one_process(local: str, served: str, tmp_path: Path) -> None:
    """2 workers trained from ``served`` (a URL) give the model 1 process trains from ``local``."""
    config = tmp_path / "run.yaml"
    config.write_text("partition: {factors: [4, 4]}\nmodel: {params: 3000}\n"
                      "train: {samples_per_partition: 64, lr: 0.001, seed: 7}\n"
                      "run: {tensorboard: false, progress: false}\n")
    steps = ["--steps", "20"]
    assert main(["train", str(config), "--signal", local, "--out", str(tmp_path / "one"),
                 *steps]) == 0
    proc = subprocess.run(command(2, str(config), "--signal", served,
                                  "--out", str(tmp_path / "two"), *steps),
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert_same_model(tmp_path / "one" / "model", tmp_path / "two" / "model")


def test_two_workers_compute_what_one_process_computes(tmp_path):
    one = run(tmp_path, 1, "one", "--steps", "25")
    two = run(tmp_path, 2, "two", "--steps", "25")
    assert_same_model(one / "model", two / "model")
    la, lb = losses(one), losses(two)
    assert sorted(la) == sorted(lb) == list(range(1, 26))
    for step in la:
        assert la[step] == pytest.approx(lb[step], rel=1e-5)
    # each worker wrote only its own partitions, all 16 are there
    assert len(ModelDir.open(two / "model").partition_ids) == 16


@pytest.mark.parametrize("first,second", [(2, 1), (1, 2)])
def test_resume_on_another_number_of_workers(tmp_path, first, second):
    reference = run(tmp_path, first, "ref", "--steps", "20")
    run(tmp_path, first, "run", "--steps", "10", "--checkpoint-every", "10")
    resumed = run(tmp_path, second, "run", "--steps", "20", "--resume")
    assert_same_model(reference / "model", resumed / "model")
    assert losses(resumed)[20] == pytest.approx(losses(reference)[20], rel=1e-5)


@pytest.mark.faults
def test_killed_worker_stops_the_job_and_resume_loses_at_most_an_interval(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG)
    out = tmp_path / "killed"
    steps = ["--steps", "400", "--checkpoint-every", "20"]
    job = subprocess.Popen(command(2, str(config), "--out", str(out), *steps),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 120
        while not list((out / "checkpoints").glob("step-*/zarr.json")):
            assert job.poll() is None and time.time() < deadline, "no checkpoint appeared"
            time.sleep(0.2)
        workers = [p for p in psutil.Process(job.pid).children(recursive=True)
                   if "distlg" in " ".join(p.cmdline())]
        assert len(workers) == 2
        os.kill(workers[1].pid, signal.SIGKILL)
        killed_at = time.time()
        job.wait(timeout=60)
        assert time.time() - killed_at < 60
        assert job.returncode != 0
    finally:
        if job.poll() is None:
            job.kill()
    survivors = [p for p in workers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not survivors, "a worker outlived the job"
    resumed = run(tmp_path, 2, "killed", *steps, "--resume")
    reference = run(tmp_path, 2, "reference", *steps)
    assert_same_model(reference / "model", resumed / "model")


def test_two_machines_on_one_host_match_one_process(tmp_path):
    """accelerate's multi-machine path (static rendezvous), each 'machine' one worker."""
    config = tmp_path / "run.yaml"
    config.write_text(CONFIG)
    port = str(29500 + os.getpid() % 1000)
    jobs = [subprocess.Popen(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_machines", "2",
         "--machine_rank", str(rank), "--num_processes", "2", "--main_process_ip", "127.0.0.1",
         "--main_process_port", port, "--rdzv_backend", "static", "--mixed_precision", "no",
         "--dynamo_backend", "no", "-m", "distlg", "train", str(config), "--steps", "15",
         "--threads", "1", "--out", str(tmp_path / "machines")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for rank in (0, 1)]
    for job in jobs:
        out, _ = job.communicate(timeout=180)
        assert job.returncode == 0, out[-3000:]
    one = run(tmp_path, 1, "one", "--steps", "15")
    assert_same_model(one / "model", tmp_path / "machines" / "model")
