"""Fault 8: ``ingest --overwrite`` builds the new store beside the old one and swaps at the
end: a source that fails half way leaves the good store as it was. The downstream tasks'
ingests: a refused measured sinogram writes nothing and leaves its file as it was; an
interrupted streamed noisy ingest resumes to the values an uninterrupted one writes; a
measured sinogram's store is no reference to compare a render with."""

import numpy as np
import pytest
from helpers import one_line, snapshot

from distlg.cli import main
from distlg.data import store as store_module
from distlg.data.degrade import ct_angles, sinogram
from distlg.data.ingest import IngestOptions, ingest
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


@pytest.mark.parametrize("source,extra,needle", [
    ("sino", ["--ct-angles", "7"], "the sinogram has 12 columns"),
    ("rgb", [], "--sinogram needs a 2-D single-channel array"),
    ("sino", ["--noise", "gaussian:0.1"], "ingest it without --noise"),
])
def test_a_refused_sinogram_writes_nothing(tmp_path, capsys, source, extra, needle):
    image = np.zeros((24, 24))
    image[6:18, 8:14] = 1
    np.save(tmp_path / "sino.npy", sinogram(image, ct_angles(12)))
    np.save(tmp_path / "rgb.npy", np.zeros((34, 12, 3), np.float32))
    before = snapshot(tmp_path)
    assert main(["ingest", str(tmp_path / f"{source}.npy"), str(tmp_path / "ct.zarr"),
                 "--sinogram", "--no-progress", *extra]) == 2
    one_line(capsys.readouterr().err, needle)
    assert snapshot(tmp_path) == before


def test_an_interrupted_noisy_volume_ingest_resumes_to_the_same_values(tmp_path, monkeypatch):
    from test_store import Interrupt, interrupt_after

    volume = np.random.default_rng(0).random((40, 12, 12), dtype=np.float32)
    np.save(tmp_path / "v.npy", volume)
    options = IngestOptions(progress=False, chunks=[5, 12, 12], noise="gaussian:0.1", noise_seed=4)
    interrupt_after(monkeypatch, 3, [])
    with pytest.raises(Interrupt):
        ingest(tmp_path / "v.npy", tmp_path / "v.zarr", options)
    assert not store_module.is_complete(tmp_path / "v.zarr")
    monkeypatch.undo()
    assert ingest(tmp_path / "v.npy", tmp_path / "v.zarr", options).status == "resumed"
    ingest(tmp_path / "v.npy", tmp_path / "ref.zarr", options)
    resumed, uninterrupted = (open_signal(str(tmp_path / n)) for n in ("v.zarr", "ref.zarr"))
    assert np.array_equal(resumed.data[:], uninterrupted.data[:])
    assert resumed.value_range == uninterrupted.value_range
    assert not np.array_equal(resumed.data[:][..., 0], volume)


def test_a_measured_sinogram_is_no_reference_for_a_render(tmp_path, capsys):
    image = np.zeros((24, 24))
    image[6:18, 8:14] = 1
    np.save(tmp_path / "sino.npy", sinogram(image, ct_angles(12)))
    store = tmp_path / "ct.zarr"
    assert main(["ingest", str(tmp_path / "sino.npy"), str(store), "--sinogram", "--no-progress"]) == 0
    assert main(["train", "--signal", str(store), "--steps", "2", "--out", str(tmp_path / "run"),
                 "--no-progress", "--no-tensorboard"]) == 0
    capsys.readouterr()
    before = snapshot(tmp_path)
    assert main(["render", str(tmp_path / "run" / "model"), "--out", str(tmp_path / "r.npy"),
                 "--compare", str(store), "--no-progress"]) == 2
    one_line(capsys.readouterr().err, "no reference to compare with")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("chunks", [[], ["--chunks", "8"]])
def test_an_ingest_stopped_by_its_source_leaves_nothing_under_the_name(tmp_path, capsys, chunks):
    # NaN in the first chunk-row or after some rows were written: a rerun would stop there too
    before = snapshot(tmp_path)
    source = _npy(tmp_path / "nan.npy", 40, nan_at=30)
    assert _ingest(source, tmp_path / "nan.zarr", *chunks) == 2
    one_line(capsys.readouterr().err, "nan.npy", "non-finite")
    assert not (tmp_path / "nan.zarr").exists()
    assert set(snapshot(tmp_path)) == set(before) | {"nan.npy"}
