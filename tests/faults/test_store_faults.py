"""A store's chunks are all there and whole, or one line names the one that is not.

A missing chunk (deleted, an HTTP 404, a folder where the file was) used to read as zeros: info
said complete, training fitted zeros with exit 0 and ``render --compare`` scored against them.
An empty, truncated or garbled chunk was a raw Blosc traceback (plus asyncio's noise over
HTTP), or decoded to wrong values silently. ``zarr.json`` edited to another dtype or a chunk
shape with a zero was a traceback."""

import json
import shutil
import time
from http.server import SimpleHTTPRequestHandler

import numpy as np
import pytest
from helpers import one_line
from modelkit import random_model
from test_remote import serve

from distlg.cli import main

TRAIN = ["train", "--factors", "2", "2", "--params", "400", "--steps", "2", "--no-progress",
         "--no-tensorboard"]
CHUNK = "c/1/1/0"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A complete store of 2 x 2 chunks (one of them all zeros, written all the same)."""
    root = tmp_path_factory.mktemp("stores")
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    image[:16, :16] = 0
    np.save(root / "image.npy", image)
    assert main(["ingest", str(root / "image.npy"), str(root / "good.zarr"), "--kind", "image",
                 "--chunks", "16", "16", "--no-progress"]) == 0
    return root / "good.zarr"


def _damaged(good, tmp_path, how: str):
    store = tmp_path / "s.zarr"
    shutil.copytree(good, store)
    chunk = store / CHUNK
    data = chunk.read_bytes()
    if how == "missing":
        chunk.unlink()
    elif how == "folder":
        chunk.unlink()
        chunk.mkdir()
    elif how == "empty":
        chunk.write_bytes(b"")
    elif how == "truncated":
        chunk.write_bytes(data[:len(data) // 2])
    elif how == "garbled":
        chunk.write_bytes(data[:20] + bytes(b ^ 0x5A for b in data[20:40]) + data[40:])
    return store


def test_every_chunk_is_written_even_all_zero_ones(good):
    assert (good / "c" / "0" / "0" / "0").is_file()  # the all-zero corner


@pytest.mark.parametrize("how, words", [("missing", ["missing"]), ("folder", [CHUNK]),
                                        ("empty", ["cannot be decoded"]),
                                        ("truncated", ["crc32c"]), ("garbled", ["crc32c"])])
def test_a_damaged_chunk_is_one_line_naming_it(good, tmp_path, capsys, how, words):
    store = _damaged(good, tmp_path, how)
    assert main(TRAIN + ["--signal", str(store), "--out", str(tmp_path / "run")]) == 2
    one_line(capsys.readouterr().err, CHUNK, "ingest it again", *words)
    assert not (tmp_path / "run" / "model").exists()
    model = random_model(tmp_path / "m", (32, 32), (2, 2), "image")
    assert main(["render", str(model), "--out", str(tmp_path / "r.npy"), "--compare", str(store),
                 "--no-progress"]) == 2
    one_line(capsys.readouterr().err, CHUNK, "nothing was written")


def test_info_names_a_missing_chunk(good, tmp_path, capsys):
    store = _damaged(good, tmp_path, "missing")
    assert main(["info", str(store)]) == 0
    out = capsys.readouterr().out
    assert "damaged" in out and CHUNK in out and "complete)" not in out


@pytest.mark.parametrize("how", ["missing", "garbled"])
def test_a_damaged_chunk_over_http_is_one_line(good, tmp_path, capsys, how):
    store = _damaged(good, tmp_path, how)
    with serve(store.parent) as (_, base):
        url = f"{base}/{store.name}"
        assert main(TRAIN + ["--signal", url, "--out", str(tmp_path / "run")]) == 2
    one_line(capsys.readouterr().err, url, CHUNK)


@pytest.mark.parametrize("edit, words", [
    (lambda m: m.update(data_type="float32"), ["dtype float32", "written with uint8"]),
    (lambda m: m["chunk_grid"]["configuration"].update(chunk_shape=[0, 16, 3]), ["chunk shape"])])
def test_edited_metadata_is_one_line(good, tmp_path, capsys, edit, words):
    store = tmp_path / "s.zarr"
    shutil.copytree(good, store)
    meta = json.loads((store / "zarr.json").read_text())
    edit(meta)
    (store / "zarr.json").write_text(json.dumps(meta))
    assert main(TRAIN + ["--signal", str(store), "--out", str(tmp_path / "run")]) == 2
    one_line(capsys.readouterr().err, "metadata was changed", *words)


class Endless(SimpleHTTPRequestHandler):
    """Answers every request with a body that never ends (no Content-Length), or, for chunks
    when ``announce`` is set, with a Content-Length far beyond any chunk."""

    announce = False

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        if self.announce and "/c/" in self.path:
            self.send_response(200)
            self.send_header("Content-Length", str(1 << 40))
            self.end_headers()
            return
        if self.announce:  # the metadata is real: only the chunks are hostile
            return SimpleHTTPRequestHandler.do_GET(self)
        self.send_response(200)
        self.end_headers()
        try:
            while True:
                self.wfile.write(b"{" * 65536)
        except (BrokenPipeError, ConnectionResetError):
            pass


class Announcing(Endless):
    announce = True


def test_a_server_that_never_stops_answering_is_cut_off(good, tmp_path, capsys):
    """A zarr.json whose body never ends used to fill the memory until the kernel killed the
    reader; a chunk announcing a terabyte likewise."""
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with serve(good.parent, Endless) as (_, base):
        t0 = time.perf_counter()
        assert main(["info", f"{base}/{good.name}"]) == 2
        assert time.perf_counter() - t0 < 30
    one_line(capsys.readouterr().err, "zarr.json", "exceeds")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200 << 10  # KiB
    with serve(good.parent, Announcing) as (_, base):
        assert main(TRAIN + ["--signal", f"{base}/{good.name}", "--out", str(tmp_path / "r")]) == 2
    one_line(capsys.readouterr().err, "c/", "exceeds")
