"""Fault 8: ``ingest --overwrite`` builds the new store beside the old one and swaps at the
end: a source that fails half way leaves the good store as it was."""

import numpy as np
from helpers import one_line, snapshot

from distlg.cli import main
from distlg.data.store import open_signal


def _npy(path, rows, nan_at=None):
    array = np.linspace(0, 1, rows * 8, dtype=np.float32).reshape(rows, 8)
    if nan_at is not None:
        array[nan_at, 3] = np.nan
    np.save(path, array)
    return path


def _ingest(source, store, *extra):
    return main(["ingest", str(source), str(store), "--kind", "image", "--no-progress", *extra])


def test_a_failed_overwrite_keeps_the_good_store(tmp_path, capsys):
    store = tmp_path / "s" / "signal.zarr"
    assert _ingest(_npy(tmp_path / "good.npy", 16), store) == 0
    before = snapshot(store.parent)
    capsys.readouterr()
    assert _ingest(_npy(tmp_path / "bad.npy", 64, nan_at=40), store, "--overwrite",
                   "--chunks", "8") == 2
    one_line(capsys.readouterr().err, "non-finite")
    assert snapshot(store.parent) == before
    assert open_signal(str(store)).shape == (16, 8)


def test_a_finished_overwrite_replaces_the_store(tmp_path):
    store = tmp_path / "s" / "signal.zarr"
    assert _ingest(_npy(tmp_path / "good.npy", 16), store) == 0
    assert _ingest(_npy(tmp_path / "other.npy", 24), store, "--overwrite") == 0
    assert open_signal(str(store)).shape == (24, 8)
    assert [p.name for p in store.parent.iterdir()] == ["signal.zarr"]


def test_a_ct_store_is_not_written_to_a_url(capsys):
    # refused before anything is read or written: the sinogram sits beside a local store
    assert main(["ingest", "builtin:phantom@32", "s3://bucket/ct.zarr", "--ct-angles", "8",
                 "--no-progress"]) == 2
    one_line(capsys.readouterr().err, "local path only")
