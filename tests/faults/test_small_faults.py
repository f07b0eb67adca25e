"""Fault 10's smaller gaps: each is one line, exit 2, and changes nothing."""

import json

from helpers import one_line, snapshot
from modelkit import random_model

from distlg.cli import main

TRAIN = ["train", "--signal", "builtin:camera@32x32", "--factors", "2", "2", "--params", "400",
         "--no-progress", "--no-tensorboard"]


def test_resume_with_fewer_steps_than_the_checkpoint_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(TRAIN + ["--out", str(out), "--steps", "6", "--checkpoint-every", "3"]) == 0
    before = snapshot(out)
    capsys.readouterr()
    assert main(TRAIN + ["--out", str(out), "--steps", "4", "--resume"]) == 2
    one_line(capsys.readouterr().err, "--steps 4 is below", "6")
    assert snapshot(out) == before


def test_a_fill_value_must_be_finite(tmp_path, capsys):
    model = random_model(tmp_path / "m", (16, 16), (2, 2), "image")
    assert main(["render", str(model), "--out", str(tmp_path / "r.npy"), "--fill", "nan",
                 "--no-progress"]) == 2
    one_line(capsys.readouterr().err, "fill value must be a finite number")
    assert not (tmp_path / "r.npy").exists()


def test_a_file_name_with_a_trailing_newline_is_unsafe(tmp_path, capsys):
    model = random_model(tmp_path / "m", (16, 16), (2, 2), "image", fmt="safetensors")
    manifest = json.loads((model / "manifest.json").read_text())
    manifest["partitions"][0]["file"] += "\n"
    (model / "manifest.json").write_text(json.dumps(manifest))
    assert main(["render", str(model), "--out", str(tmp_path / "r.npy"), "--no-progress"]) == 2
    one_line(capsys.readouterr().err, "unsafe file name")
    assert not (tmp_path / "r.npy").exists()


def test_leftovers_of_killed_workers_are_swept_at_the_next_checkpoint(tmp_path):
    checkpoints = tmp_path / "run" / "checkpoints"
    for stale in ["step-00000001/.part-000001.safetensors.tmp-999",
                  "step-00000002/.global.safetensors.tmp-999"]:
        (checkpoints / stale).parent.mkdir(parents=True, exist_ok=True)
        (checkpoints / stale).write_bytes(b"half")
    assert main(TRAIN + ["--out", str(tmp_path / "run"), "--steps", "2", "--checkpoint-every",
                         "2", "--resume"]) == 0
    assert [p.name for p in checkpoints.iterdir()] == ["step-00000002"]
    assert not list((checkpoints / "step-00000002").glob(".*"))


def test_extend_with_no_steps_leaves_no_output_folder(tmp_path, capsys):
    from test_modeldir_faults import _clip_store

    model = random_model(tmp_path / "m", (6, 8, 10), (2, 2, 1), "video")
    assert main(["extend", str(model), str(tmp_path / "out"), "--signal",
                 str(_clip_store(tmp_path)), "--steps", "0", "--no-progress"]) == 2
    one_line(capsys.readouterr().err, "steps must be >= 1")
    assert not (tmp_path / "out").exists()


def test_extend_on_a_device_this_machine_cannot_use_is_one_line(tmp_path, capsys):
    import pytest
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: --device cuda is usable")
    from test_modeldir_faults import _clip_store

    model = random_model(tmp_path / "m", (6, 8, 10), (2, 2, 1), "video")
    before = snapshot(model)
    assert main(["extend", str(model), str(tmp_path / "out"), "--signal",
                 str(_clip_store(tmp_path)), "--device", "cuda", "--no-progress"]) == 2
    one_line(capsys.readouterr().err, "device cuda cannot be used here")
    assert not (tmp_path / "out").exists() and snapshot(model) == before


def test_a_huge_builtin_size_is_refused_before_allocating(tmp_path, capsys):
    for command in (["ingest", "builtin:camera@100000x100000", str(tmp_path / "s.zarr")],
                    TRAIN[:1] + ["--signal", "builtin:camera@100000x100000",
                                 "--out", str(tmp_path / "run"), "--steps", "2"]):
        assert main(command) == 2
        one_line(capsys.readouterr().err, "the largest is")
    assert list(tmp_path.iterdir()) == []


def test_crop_into_a_file_says_it_is_a_file(tmp_path, capsys):
    model = random_model(tmp_path / "m", (16, 16), (2, 2), "image")
    (tmp_path / "afile").write_bytes(b"mine")
    before = snapshot(tmp_path)
    assert main(["crop", str(model), str(tmp_path / "afile"), "--keep", "0:8"]) == 2
    one_line(capsys.readouterr().err, "afile is a file, not a directory")
    assert snapshot(tmp_path) == before


def test_info_of_a_rendered_store_claims_no_partition_alignment(tmp_path, capsys):
    """A render's store records no partitioning: info prints its chunks and nothing empty."""
    model = random_model(tmp_path / "m", (16, 16), (2, 2), "image")
    assert main(["render", str(model), "--out", str(tmp_path / "r.zarr"), "--region", "0:15,0:13",
                 "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["info", str(tmp_path / "r.zarr")]) == 0
    chunks = [line for line in capsys.readouterr().out.splitlines() if line.startswith("chunks")]
    assert len(chunks) == 1 and "aligned" not in chunks[0] and not chunks[0].endswith(" "), chunks
