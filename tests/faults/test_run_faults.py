"""A run directory and its launcher: --overwrite deletes nothing before every check has passed
and nothing distlg did not write; --resume survives a half-written history line and says when
there is nothing to resume; a peer lost in a barrier is one line naming the resume; the
launcher's --mixed_precision is honoured or refused; the launcher's summary ends with the
worker's line; 2 workers score SSIM; off a terminal the progress is plain lines."""

import json
import subprocess
import sys

import pytest
from helpers import one_line, snapshot
from test_distributed import command

from distlg.cli import main
from distlg.errors import WorkerLost
from distlg.modeldir.format import ModelDir
from distlg.training import distributed
from distlg.training.distributed import World

TINY = ["--signal", "builtin:camera@32x32", "--factors", "2", "2", "--params", "400",
        "--no-progress", "--no-tensorboard"]


def _train(out, *extra: str) -> int:
    return main(["train", *TINY, "--out", str(out), *extra])


@pytest.fixture
def run(tmp_path):
    out = tmp_path / "run"
    assert _train(out, "--steps", "4", "--checkpoint-every", "2", "--log-every", "1") == 0
    return out


@pytest.mark.parametrize("flags, words", [
    (["--signal", "nope.zarr"], ["nope.zarr does not exist"]),
    (["--factors", "1000", "1000"], ["1000 partitions"]),
    (["--signal", "INCOMPLETE"], ["incomplete"])])
def test_a_refused_overwrite_leaves_the_old_run(run, tmp_path, capsys, flags, words):
    """The old run used to be deleted before the signal was opened and the plan made."""
    if "INCOMPLETE" in flags:
        from distlg.data import store

        store.create(tmp_path / "half.zarr", (32, 32, 1), "uint8", (16, 16), ("y", "x"),
                     {"kind": "image", "axes": ["y", "x"], "complete": False,
                      "ingest": {"done": 16}})
        flags = ["--signal", str(tmp_path / "half.zarr")]
    before = snapshot(run)
    capsys.readouterr()
    assert _train(run, "--steps", "2", "--overwrite", *flags) == 2
    one_line(capsys.readouterr().err, *words)
    assert snapshot(run) == before


def test_overwrite_deletes_only_what_distlg_wrote(tmp_path, capsys):
    out = tmp_path / "work"
    (out / "model").mkdir(parents=True)
    (out / "model" / "net.py").write_text("import torch\n")
    (out / "checkpoints" / "x").mkdir(parents=True)
    (out / "checkpoints" / "x" / "e9.ckpt").write_bytes(b"weights")
    before = snapshot(out)
    assert _train(out, "--steps", "2") == 2
    one_line(capsys.readouterr().err, "holds a run already")
    assert _train(out, "--steps", "2", "--overwrite") == 2
    one_line(capsys.readouterr().err, "files distlg did not write (checkpoints/x)")
    (out / "checkpoints" / "x" / "e9.ckpt").rename(out / "e9.ckpt")  # the checkpoints, moved
    (out / "checkpoints" / "x").rmdir()
    assert _train(out, "--steps", "2", "--overwrite") == 2
    one_line(capsys.readouterr().err, "files distlg did not write (model/net.py)")
    before = snapshot(out)
    assert snapshot(out) == before


def test_overwrite_replaces_a_run_with_tensorboard_logs(tmp_path):
    out = tmp_path / "run"
    flags = [f for f in TINY if f != "--no-tensorboard"]
    assert main(["train", *flags, "--out", str(out), "--steps", "2"]) == 0
    assert (out / "tensorboard").is_dir()
    assert main(["train", *flags, "--out", str(out), "--steps", "3", "--overwrite"]) == 0
    assert ModelDir.open(out / "model").partition_ids == [0, 1, 2, 3]
    steps = [json.loads(line)["step"] for line in (out / "history.jsonl").read_text().splitlines()]
    assert max(steps) == 3


def test_resume_where_there_is_no_run_says_so(tmp_path, capsys):
    assert _train(tmp_path / "typo", "--steps", "2", "--resume") == 0
    err = capsys.readouterr().err
    assert "--resume, but" in err and "holds no run yet" in err and "step 0" in err


def test_a_half_written_history_line_does_not_block_resume(run, capsys):
    history = run / "history.jsonl"
    history.write_text(history.read_text() + '{"step": 5, "lo')  # killed mid-write
    assert _train(run, "--steps", "6", "--checkpoint-every", "2", "--log-every", "1",
                  "--resume") == 0
    steps = [json.loads(line)["step"] for line in history.read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 6 and steps.count(5) == 1


@pytest.mark.parametrize("collective", ["barrier", "all_gather_object"])
def test_a_peer_lost_in_a_barrier_or_gather_is_worker_lost(monkeypatch, collective):
    def dead(*args, **kwargs):
        raise RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection "
                           "closed by peer [127.0.0.1]:41234")

    monkeypatch.setattr(distributed.dist, collective, dead)
    world = World(rank=0, size=2, backend="gloo")
    with pytest.raises(WorkerLost, match="lost contact with the others"):
        world.barrier() if collective == "barrier" else world.all_gather(1)


def test_a_peer_lost_while_checkpointing_names_the_resume(tmp_path, capsys, monkeypatch):
    from distlg.training import checkpoint

    save, calls = checkpoint.save, []

    def lost_at_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise WorkerLost("worker 0 lost contact with the others (Connection closed by peer)")
        return save(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save", lost_at_second)
    assert _train(tmp_path / "run", "--steps", "6", "--checkpoint-every", "2") == 1
    one_line(capsys.readouterr().err, "lost contact", "restart with --resume",
             "step-00000002")


def test_accelerates_bf16_becomes_precision_bf16(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert _train(tmp_path / "run", "--steps", "2") == 0
    assert "--precision bf16" in capsys.readouterr().out
    manifest = ModelDir.open(tmp_path / "run" / "checkpoints" / "step-00000002").manifest
    assert manifest.training["config"]["train"]["precision"] == "bf16"
    for flags, word in ((["--precision", "tf32"], "disagree"), ([], "fp16")):
        monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16" if not flags else "bf16")
        assert _train(tmp_path / "other", "--steps", "2", *flags) == 2
        one_line(capsys.readouterr().err, word)
        assert not (tmp_path / "other").exists()


def test_the_launcher_passes_mixed_precision_through(tmp_path):
    """``accelerate launch --mixed_precision bf16`` (what a config file's key becomes too)."""
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--cpu",
                           "--num_processes", "1", "--mixed_precision", "bf16", "-m", "distlg",
                           "train", *TINY, "--steps", "2", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--precision bf16" in proc.stdout


def _launch(tmp_path, *args: str) -> subprocess.CompletedProcess:
    argv = command(2, *args)
    return subprocess.run(argv, capture_output=True, text=True, timeout=180, cwd=tmp_path)


def test_under_a_launcher_the_workers_line_ends_the_output(tmp_path):
    """The launcher prints its own traceback after a failed worker; its closing summary now
    names the worker's one line instead of "To enable traceback see ..."."""
    assert main(["ingest", "builtin:camera@32x32", str(tmp_path / "a.zarr"), "--no-progress"]) == 0
    proc = _launch(tmp_path, *TINY, "--signal", "a.zarr", "--steps", "2", "--memory-budget-gib",
                   "1e-8", "--out", "r")
    assert proc.returncode != 0
    tail = "\n".join(proc.stderr.strip().splitlines()[-4:])
    assert "distlg train: error:" in tail and "memory budget" in tail, proc.stderr[-3000:]
    assert not (tmp_path / "r").exists()


def test_extend_under_a_launcher_is_refused_before_anything_is_written(tmp_path):
    from modelkit import random_model
    from test_modeldir_faults import _clip_store

    model = random_model(tmp_path / "m", (6, 8, 10), (2, 2, 1), "video")
    clip = _clip_store(tmp_path)
    before = snapshot(tmp_path)
    argv = command(2, "x")[:-2] + ["extend", str(model), str(tmp_path / "out"), "--signal",
                                   str(clip), "--no-progress"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0
    assert "extend runs in one process" in "\n".join(proc.stderr.splitlines()[-4:])
    assert snapshot(tmp_path) == before


def test_two_workers_score_ssim(tmp_path):
    proc = _launch(tmp_path, *TINY, "--signal", "builtin:camera@64x64", "--steps", "3",
                   "--out", "two")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _train(tmp_path / "one", "--signal", "builtin:camera@64x64", "--steps", "3") == 0
    records = [json.loads(line) for name in ("one", "two")
               for line in (tmp_path / name / "history.jsonl").read_text().splitlines()]
    scores = [r["ssim"] for r in records if "psnr" in r]
    assert len(scores) == 2 and None not in scores
    assert scores[0] == pytest.approx(scores[1], abs=1e-4)


def test_off_a_terminal_progress_is_plain_lines(tmp_path, capsys):
    flags = [f for f in TINY if f != "--no-progress"]
    assert main(["train", *flags, "--steps", "3", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "train: 3/3 steps (100 %)" in err
    assert main(["render", str(tmp_path / "run" / "model"), "--out", str(tmp_path / "r.npy")]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err and "render: 1,024/1,024 values (100 %)" in err
