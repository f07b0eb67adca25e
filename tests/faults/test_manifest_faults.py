"""Fault 7: a manifest is validated as a whole when it is opened; what it claims is bounded by
the files' sizes; every fault is one line."""

import json

import pytest
from helpers import one_line
from modelkit import random_model

from distlg.cli import main


def _set(manifest, path, value):
    *parents, last = path
    node = manifest
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value


CASES = [
    (("signal", "kind"), KeyError, "malformed"),
    (("partitions", 0, "sha256"), KeyError, "malformed"),
    (("partitions", 0, "params"), "lots", "parameters"),
    (("signal", "channels"), 0, "channel"),
    (("signal", "dtype"), "object", "numeric"),
    (("grid", "factors"), [100000, 100000], "partitions"),
    (("architecture", "local_width"), 200000, "parameters"),
]


@pytest.mark.parametrize("where, value, needle", CASES)
def test_a_bad_manifest_is_one_line(tmp_path, capsys, where, value, needle):
    model = random_model(tmp_path / "m", (16, 16), (2, 2), "image")
    manifest = json.loads((model / "manifest.json").read_text())
    if where[:2] == ("grid", "factors"):
        manifest["signal"]["shape"] = [100000, 100000]
    _set(manifest, where, value)
    (model / "manifest.json").write_text(json.dumps(manifest))
    for command in (["info", str(model)],
                    ["render", str(model), "--out", str(tmp_path / "r.npy"), "--no-progress"]):
        assert main(command) == 2
        one_line(capsys.readouterr().err, needle)
    assert not (tmp_path / "r.npy").exists()


@pytest.mark.parametrize("keep", [0, 1, 100, -2])
def test_a_truncated_manifest_is_one_line(tmp_path, capsys, keep):
    model = random_model(tmp_path / "m", (16, 16), (2, 2), "image")
    text = (model / "manifest.json").read_text()
    (model / "manifest.json").write_text(text[:keep])
    assert main(["render", str(model), "--out", str(tmp_path / "r.npy"), "--no-progress"]) == 2
    one_line(capsys.readouterr().err, "manifest.json")
    assert not (tmp_path / "r.npy").exists()
