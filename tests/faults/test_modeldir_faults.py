"""Fault 2: crop, extend and export check every file they copy as render does: no link
leading outside the model directory, sha256 as in the manifest; they write nothing otherwise."""

import os
import stat
from pathlib import Path

import numpy as np
import pytest
from helpers import one_line, snapshot
from modelkit import damage, partition_object, random_model

from distlg.cli import main
from distlg.data import store
from distlg.data.signal import SignalInfo


@pytest.fixture
def video(tmp_path):
    return random_model(tmp_path / "video", (6, 8, 10), (2, 2, 1), "video")


def _link_outside(model: Path, tmp_path: Path) -> None:
    """Replace the object holding a partition by a link to a copy outside the directory (same
    bytes, so every checksum still matches)."""
    name = partition_object(model, 1)
    outside = tmp_path / "outside.bin"
    outside.write_bytes(name.read_bytes())
    name.unlink()
    name.symlink_to(outside)


def _tamper(model: Path, tmp_path: Path) -> None:
    damage(model, 1)


def _clip_store(tmp_path: Path) -> Path:
    clip = np.random.default_rng(1).integers(0, 256, (9, 8, 10, 3), dtype=np.uint8)
    info = SignalInfo("video", clip.shape[:-1], 3, np.dtype(np.uint8), (0.0, 255.0))
    attrs = {**store.attributes(info), "meta": {"fps": 25.0}}
    stored = store.create(tmp_path / "clip.zarr", clip.shape, clip.dtype, clip.shape[:-1],
                          info.axes, attrs)
    stored[...] = clip
    store.update(stored, complete=True)
    return tmp_path / "clip.zarr"


COMMANDS = {
    "crop": lambda model, out, tmp: ["crop", str(model), str(out), "--drop-partitions", "0",
                                     "--no-progress"],
    "export": lambda model, out, tmp: ["export", str(model), str(out), "--no-progress"],
    "extend": lambda model, out, tmp: ["extend", str(model), str(out), "--signal",
                                       str(_clip_store(tmp)), "--steps", "2",
                                       "--samples-per-partition", "8", "--no-progress"],
}
FAULTS = {"link": (_link_outside, "link leading outside"), "tampered": (_tamper, "fails its checksum")}


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_edits_refuse_links_and_changed_files(command, fault, video, tmp_path, capsys):
    spoil, message = FAULTS[fault]
    spoil(video, tmp_path)
    args = COMMANDS[command](video, tmp_path / "out", tmp_path)
    before = snapshot(video)
    assert main(args) == 2
    one_line(capsys.readouterr().err, message)
    assert not (tmp_path / "out").exists()
    assert snapshot(video) == before


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_new_directory_gets_the_permissions_of_a_new_folder(command, video, tmp_path):
    """Built in a private staging folder, the output must not stay private once in place."""
    assert main(COMMANDS[command](video, tmp_path / "out", tmp_path)) == 0
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o777 & ~umask
