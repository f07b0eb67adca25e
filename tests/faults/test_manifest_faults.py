"""Fault 7: a model's description is validated as a whole when it is opened, in either format
(format 2: the root zarr.json's ``distlg`` attribute; format 1: manifest.json); what it claims
is bounded; every fault is one line, before anything is rendered."""

import json
import math
import re

import pytest
from helpers import one_line
from modelkit import random_model

from distlg.cli import main

DOCUMENT = {"shards": "zarr.json", "safetensors": "manifest.json"}


def _set(manifest, path, value):
    *parents, last = path
    node = manifest
    for key in parents:
        node = node[key]
    if value is KeyError:
        del node[last]
    else:
        node[last] = value


def _edit(model, fmt, change):
    path = model / DOCUMENT[fmt]
    doc = json.loads(path.read_text())
    change(doc["attributes"]["distlg"] if fmt == "shards" else doc)
    path.write_text(json.dumps(doc))


BOTH = [
    (("signal", "kind"), KeyError, "unknown signal kind"),
    (("signal", "channels"), 0, "channel"),
    (("signal", "dtype"), "object", "numeric"),
    (("grid", "factors"), [100000, 100000], "partitions"),
    (("architecture", "local_width"), 200000, "local_width|parameters"),
    (("architecture", "w0"), math.nan, "w0 must be positive finite"),
    (("architecture", "coord_scale"), [math.nan, 1.0], "coord_scale must be positive finite"),
    (("architecture", "cell_origin"), [math.inf, 0.0], "cell_origin must be finite"),
    (("signal", "value_range"), [0, math.inf], "value_range must be finite"),
    (("signal", "value_range"), [5, 5], "value range must be increasing"),
    (("signal", "shape"), [1 << 30, 1 << 30], "larger than distlg handles"),
    (("architecture", "in_dims"), 3, "maps 3 to 3 values|coord_scale has 2 entries"),
]
V1_ONLY = [
    (("partitions", 0, "sha256"), KeyError, "malformed"),
    (("partitions", 0, "params"), "lots", "parameters"),
]
V2_ONLY = [
    (("shards", "block"), [0, 1], "does not fit the grid"),
    (("layout", "local", 0, 1), [3, 8], "layout differs"),
    (("layout",), KeyError, "no shards.block or layout"),
]
CASES = [(f, *c) for f in DOCUMENT for c in BOTH] + [("safetensors", *c) for c in V1_ONLY] + \
    [("shards", *c) for c in V2_ONLY]


@pytest.mark.parametrize("fmt, where, value, needle", CASES)
def test_a_bad_manifest_is_one_line(tmp_path, capsys, fmt, where, value, needle):
    model = random_model(tmp_path / "m", (16, 16), (2, 2), "image", fmt=fmt)

    def change(manifest):
        if where[:2] == ("grid", "factors"):
            manifest["signal"]["shape"] = [100000, 100000]
        _set(manifest, where, value)

    _edit(model, fmt, change)
    for command in (["info", str(model)],
                    ["render", str(model), "--out", str(tmp_path / "r.npy"), "--no-progress"]):
        assert main(command) == 2
        line = one_line(capsys.readouterr().err)
        assert re.search(needle, line), line
    assert not (tmp_path / "r.npy").exists()


@pytest.mark.parametrize("fmt", sorted(DOCUMENT))
@pytest.mark.parametrize("keep", [0, 1, 100, -2])
def test_a_truncated_manifest_is_one_line(tmp_path, capsys, keep, fmt):
    model = random_model(tmp_path / "m", (16, 16), (2, 2), "image", fmt=fmt)
    path = model / DOCUMENT[fmt]
    path.write_text(path.read_text()[:keep])
    assert main(["render", str(model), "--out", str(tmp_path / "r.npy"), "--no-progress"]) == 2
    one_line(capsys.readouterr().err, DOCUMENT[fmt])
    assert not (tmp_path / "r.npy").exists()
