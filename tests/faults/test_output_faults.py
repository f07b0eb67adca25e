"""Outputs go where they say: an output given as a URL the command cannot write is refused in
one line (it used to be written to a local folder ``./s3:/bucket/...`` and reported as
written; ingest, crop, export and extend write s3:// themselves), an output inside an
input (or a store, or a model directory) is refused, and two commands never write one output
at once (a lock file beside it, refused in one line while held, never blocking after its
holder died). Every refusal exits 2 and leaves the folder as it was."""

import os
import shutil
import signal
import subprocess
import sys

import pytest
from helpers import one_line, snapshot
from modelkit import random_model

from distlg.cli import main
from distlg.outputs import exclusive, lock_path

URLS = ["s3://bucket/out", "http://host/out", "https://host/out", "gs://bucket/out"]


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("tree")
    random_model(root / "m", (16, 16), (2, 2), "image")
    assert main(["ingest", "builtin:camera@32x32", str(root / "a.zarr"), "--no-progress"]) == 0
    assert main(["train", "--signal", str(root / "a.zarr"), "--factors", "2", "2", "--params",
                 "400", "--steps", "2", "--out", str(root / "run"), "--no-progress",
                 "--no-tensorboard"]) == 0
    return root


@pytest.fixture
def tree(template, tmp_path, monkeypatch):
    """A folder holding a model, a store and a run with a checkpoint; commands run inside it."""
    root = tmp_path / "tree"
    shutil.copytree(template, root)
    monkeypatch.chdir(root)
    return root


def _commands(out: str) -> list[list[str]]:
    """Every command that writes, with ``out`` as its output."""
    return [["render", "m", "--out", out + ".npy", "--no-progress"],
            ["crop", "m", out, "--keep", "0:8"],
            ["export", "run", out, "--no-progress"],
            ["train", "--signal", "a.zarr", "--steps", "2", "--out", out, "--no-progress"],
            ["pack", "a.zarr", out, "--no-progress"],
            ["ingest", "builtin:camera@32x32", out + ".zarr", "--no-progress"]]


@pytest.mark.parametrize("url", URLS)
def test_an_output_that_is_a_url_is_refused_and_nothing_is_written(tree, capsys, url):
    before = snapshot(tree)
    for argv in _commands(url):
        if argv[0] in ("ingest", "crop", "export") and url.startswith("s3://"):
            continue  # they write s3:// stores and model directories (tests/test_s3.py)
        capsys.readouterr()
        assert main(argv) == 2, argv
        one_line(capsys.readouterr().err, url.split("://")[0])
        assert snapshot(tree) == before, argv


def test_extend_to_a_url_is_refused(tmp_path, capsys, monkeypatch):
    from test_modeldir_faults import _clip_store

    monkeypatch.chdir(tmp_path)
    model = random_model(tmp_path / "m", (6, 8, 10), (2, 2, 1), "video")
    clip = _clip_store(tmp_path)
    before = snapshot(tmp_path)
    assert main(["extend", str(model), "gs://bucket/x", "--signal", str(clip), "--no-progress"]) == 2
    one_line(capsys.readouterr().err, "gs://bucket/x is a URL")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("argv, words", [
    (["train", "--signal", "a.zarr", "--steps", "2", "--out", "a.zarr/run"], ["inside", "a.zarr"]),
    (["train", "--signal", "a.zarr", "--steps", "2", "--out", "a.zarr"], ["is the signal"]),
    (["train", "--signal", "a.zarr", "--steps", "2", "--out", "m"], ["is a model directory"]),
    (["train", "--signal", "a.zarr", "--steps", "2", "--out", "."], ["holds the signal"]),
    (["pack", "a.zarr", "a.zarr/pack"], ["inside", "a.zarr"]),
    (["render", "m", "--out", "m/r.npy"], ["inside", "model"]),
    (["render", "m", "--out", "a.zarr/r.npy"], ["inside a signal store"]),
    (["crop", "m", "m/sub", "--keep", "0:8"], ["inside", "model"]),
    (["export", "run/checkpoints/step-00000002", "run/checkpoints/step-00000002/x"], ["inside"]),
    (["ingest", "builtin:camera@32x32", "m/s.zarr"], ["inside a model directory"])])
def test_an_output_inside_an_input_or_a_distlg_folder_is_refused(tree, capsys, argv, words):
    before = snapshot(tree)
    capsys.readouterr()
    quiet = [] if argv[0] == "crop" else ["--no-progress"]
    assert main(argv + quiet) == 2
    one_line(capsys.readouterr().err, *words)
    assert snapshot(tree) == before


def test_export_into_its_run_folder_is_fine(tree):
    """The main job exports RUN to RUN/exported: inside the run, not inside its checkpoint."""
    assert main(["export", "run", "run/exported", "--no-progress"]) == 0


def test_export_onto_its_checkpoint_names_no_option_it_lacks(tree, capsys):
    capsys.readouterr()
    step = "run/checkpoints/step-00000002"
    assert main(["export", step, step]) == 2
    line = one_line(capsys.readouterr().err, "is the checkpoint")
    assert "--in-place" not in line


@pytest.mark.parametrize("argv, out", [
    (["render", "m", "--out", "r.npy", "--no-progress"], "r.npy"),
    (["crop", "m", "c", "--keep", "0:8"], "c"),
    (["crop", "m", "--in-place", "--keep", "0:8"], "m"),
    (["export", "run", "e", "--no-progress"], "e"),
    (["train", "--signal", "a.zarr", "--steps", "2", "--out", "run2", "--no-progress"], "run2"),
    (["pack", "a.zarr", "p", "--no-progress"], "p"),
    (["ingest", "builtin:astronaut@32x32", "s.zarr", "--no-progress"], "s.zarr")])
def test_an_output_being_written_is_refused_in_one_line(tree, capsys, argv, out):
    before = snapshot(tree)
    capsys.readouterr()
    with exclusive(tree / out):  # another command writing it
        assert main(argv) == 2
    one_line(capsys.readouterr().err, "being written by another distlg command")
    assert snapshot(tree) == before
    assert main(argv) == 0  # released: the same command now runs
    assert not lock_path(tree / out).exists()


HOLD = """
import sys, time
from distlg.outputs import exclusive
with exclusive(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_the_lock_of_a_killed_command_does_not_block(tree, capsys):
    """kill -9 of a holder leaves its lock file and staging folder; the next command takes
    the lock (the kernel dropped it with the process) and sweeps the staging folder."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tree / "r.npy")],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    (tree / ".r.npy.abcd1234.partial").mkdir()  # what a render killed mid-way leaves
    assert main(["render", "m", "--out", "r.npy", "--no-progress"]) == 2  # still alive: refused
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert lock_path(tree / "r.npy").exists()
    assert main(["render", "m", "--out", "r.npy", "--no-progress"]) == 0
    assert not list(tree.glob(".r.npy*"))


def test_two_ingests_into_one_new_store_one_refused_the_other_whole(tmp_path):
    """Started together, the second is refused while the first writes; the store ends whole
    (it used to be marked complete with rows of zeros)."""
    procs = [subprocess.Popen([sys.executable, "-m", "distlg", "ingest", f"builtin:{name}@256x256",
                               str(tmp_path / "s.zarr"), "--chunks", "16", "16", "--no-progress"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in ("astronaut", "camera")]
    done = [p.communicate(timeout=120) + (p.returncode,) for p in procs]
    codes = sorted(code for _, _, code in done)
    assert codes in ([0, 0], [0, 2]), done
    refused = [err for _, err, code in done if code == 2]
    if refused:  # while the first wrote, or (started late) after it had finished
        line = one_line(refused[0])
        assert "being written by another" in line or "already holds a complete signal" in line
    from distlg.data.sources.builtin import builtin
    from distlg.data.store import open_store

    signal = open_store(tmp_path / "s.zarr")
    source = signal.info.source.split(":")[1].split("@")[0]
    expected = builtin(f"{source}@256x256").data
    assert (signal.data[:] == expected).all()


def test_a_name_near_the_file_system_limit_can_be_rendered_and_locked(tree):
    long = "r" * 245 + ".npy"  # hidden names beside it used to exceed 255 bytes
    assert main(["render", "m", "--out", long, "--no-progress"]) == 0
    assert (tree / long).is_file()
    assert [p.name for p in tree.iterdir() if p.name.startswith(".")] == []  # nothing beside it
