"""Stores in S3-compatible object storage: ingest straight to s3:// with the completion marker
written last, the same values, training (1 and 2 workers), render --compare and info as from
the local copy, retries through a failing server, and one-line errors.

moto's S3 server runs in a thread on 127.0.0.1; the client reaches it through a small proxy
(``Proxy``) that logs every request and can answer chosen ones with an S3 error or stall them.
The endpoint and credentials reach distlg the standard way, by AWS_* environment variables.
"""

import logging
import sys
import threading
import time
from contextlib import contextmanager
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from faults.helpers import one_line
from modelkit import assert_same_stream, random_model
from test_distributed import assert_two_workers_match_one_process
from test_remote import TRAIN, assert_equal_models

from distlg.cli import main
from distlg.commands.info import describe_store
from distlg.data import remote, store
from distlg.data.store import StoreError, open_signal
from distlg.geometry import PartitionGrid
from distlg.modeldir.format import ModelDir

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

BUCKET = "signals"
SOURCE = "builtin:astronaut@64x64"
CHUNKING = ["--factors", "2", "2", "--chunks", "16", "16"]  # 16 chunks of 16x16
ERROR = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
         b"<Message>We encountered an internal error. Please try again.</Message></Error>")


class Proxy(BaseHTTPRequestHandler):
    """Forwards each request to the S3 server; logs (method, key, body) of every request and
    lets ``fault(method, key)`` answer it instead: an HTTP status (with an S3 error body), or
    a number of seconds to stall before forwarding."""

    protocol_version = "HTTP/1.1"
    upstream: tuple[str, int]
    log: list = []
    fault = None
    failed = 0
    lock = threading.Lock()

    def log_message(self, *args) -> None:
        pass

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        key = self.path.split("?")[0].split(f"/{BUCKET}/", 1)[-1]
        with self.lock:
            self.log.append((self.command, key, body))
            answer = self.fault(self.command, key) if self.fault else None
            type(self).failed += isinstance(answer, int)
        if isinstance(answer, int):
            return self._send(answer, {"Content-Type": "application/xml"}, ERROR)
        if isinstance(answer, float):
            time.sleep(answer)
        upstream = HTTPConnection(*self.upstream, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
        try:
            upstream.request(self.command, self.path, body, headers)
            reply = upstream.getresponse()
            content = reply.read()
        except OSError:  # the S3 server has stopped (a stalled request outlived the tests)
            return
        finally:
            upstream.close()
        skip = {"connection", "transfer-encoding", "content-length"}
        self._send(reply.status, {k: v for k, v in reply.getheaders() if k.lower() not in skip},
                   content)

    def _send(self, status: int, headers: dict, content: bytes) -> None:
        try:
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(content)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (a stall)
            pass

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle


@contextmanager
def faults(fault):
    """Requests answered by ``fault`` (see ``Proxy``) inside the block; the log starts empty."""
    Proxy.log.clear()
    Proxy.fault, Proxy.failed = (staticmethod(fault) if fault else None), 0
    try:
        yield Proxy
    finally:
        Proxy.fault = None


@pytest.fixture(scope="module")
def endpoint():
    """moto's S3 server behind ``Proxy``, with a bucket, as the AWS endpoint of this process
    and the worker processes it starts."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    Proxy.upstream = server.get_host_and_port()
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{proxy.server_port}"
    with pytest.MonkeyPatch.context() as env:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": url,
                            "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE":
                            "/nonexistent"}.items():
            env.setenv(name, value)
        env.delenv("AWS_PROFILE", raising=False)
        import boto3

        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield url
    proxy.shutdown()
    proxy.server_close()
    server.stop()


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("local") / "astronaut.zarr"
    assert main(["ingest", SOURCE, str(path), *CHUNKING, "--no-progress"]) == 0
    return path


@pytest.fixture(scope="module")
def remote_store(endpoint) -> str:
    url = f"s3://{BUCKET}/astronaut.zarr"
    assert main(["ingest", SOURCE, url, *CHUNKING, "--no-progress"]) == 0
    return url


@pytest.fixture(scope="module")
def local_model(local, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "run"
    assert main(TRAIN + ["--signal", str(local), "--out", str(out), "--steps", "5"]) == 0
    return out / "model"


def json_puts(log) -> list[bytes]:
    return [body for method, key, body in log if method == "PUT" and key.endswith("zarr.json")]


# -- ingest ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("shard", [[], ["--shard", "32", "32"]])
def test_ingest_to_s3_writes_the_local_store_with_the_marker_last(endpoint, local, shard, tmp_path):
    url = f"s3://{BUCKET}/ingest{len(shard)}.zarr"
    with faults(None) as proxy:
        assert main(["ingest", SOURCE, url, *CHUNKING, *shard, "--no-progress"]) == 0
    writes = [(key, body) for method, key, body in proxy.log if method == "PUT"]
    chunk_writes = [key for key, _ in writes if "/c/" in key]
    assert len(chunk_writes) == (4 if shard else 16) and len(set(chunk_writes)) == len(chunk_writes)
    # the last write is the marker, and no zarr.json before it says complete
    assert writes[-1][0].endswith("zarr.json") and b'"complete": true' in writes[-1][1]
    assert not any(b'"complete": true' in body for body in json_puts(proxy.log)[:-1])

    plain = local if not shard else tmp_path / "sharded.zarr"
    if shard:
        assert main(["ingest", SOURCE, str(plain), *CHUNKING, *shard, "--no-progress"]) == 0
    served, here = open_signal(url), open_signal(plain)
    assert served.info == here.info and served.info.fingerprint == here.info.fingerprint
    assert np.array_equal(np.asarray(served.data[...]), np.asarray(here.data[...]))
    assert store.stored_bytes(url) == store.stored_bytes(plain)
    # again: up to date, nothing written
    with faults(None) as proxy:
        assert main(["ingest", SOURCE, url, *CHUNKING, *shard, "--no-progress"]) == 0
    assert not [1 for method, *_ in proxy.log if method in ("PUT", "DELETE", "POST")]


def test_a_failed_write_leaves_no_marker_and_ingest_resumes(endpoint, local, monkeypatch, capsys):
    monkeypatch.setattr(remote, "TRIES", 2)
    monkeypatch.setattr(remote, "BACKOFF_S", 0.01)
    url = f"s3://{BUCKET}/failed.zarr"
    capsys.readouterr()
    with faults(lambda method, key: 500 if method == "PUT" and key.endswith("c/2/1/0") else None) as proxy:
        assert main(["ingest", SOURCE, url, *CHUNKING, "--no-progress"]) == 2
    one_line(capsys.readouterr().err, url, "c/2/1/0", "after 2 tries", "HTTP 500")
    assert proxy.failed == 2  # botocore and s3fs do not retry on their own: TRIES is all
    with pytest.raises(StoreError, match=r"incomplete \(ingest stopped after 32 of 64 y rows\)"):
        open_signal(url)
    assert "incomplete" in describe_store(url)[0]
    with faults(None) as proxy:  # the server is back: the same command resumes at row 32
        assert main(["ingest", SOURCE, url, *CHUNKING, "--no-progress"]) == 0
    assert "resumed" in capsys.readouterr().out
    assert not any("/c/0/" in key or "/c/1/" in key for method, key, _ in proxy.log if method == "PUT")
    assert np.array_equal(np.asarray(open_signal(url).data[...]),
                          np.asarray(open_signal(local).data[...]))


def test_an_existing_remote_store_is_replaced_only_with_overwrite(endpoint, capsys):
    url = f"s3://{BUCKET}/replace.zarr"
    assert main(["ingest", SOURCE, url, *CHUNKING, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["ingest", "builtin:camera@64x64", url, *CHUNKING, "--no-progress"]) == 2
    one_line(capsys.readouterr().err, url, "--overwrite")
    assert open_signal(url).info.channels == 3
    assert main(["ingest", "builtin:camera@64x64", url, *CHUNKING, "--no-progress", "--overwrite"]) == 0
    camera = open_signal(url)
    assert camera.info.channels == 1 and camera.info.source == "builtin:camera@64x64"


def test_objects_that_are_not_a_store_are_not_replaced(endpoint, capsys):
    import boto3

    s3 = boto3.client("s3")
    s3.put_object(Bucket=BUCKET, Key="notes.zarr/readme.txt", Body=b"mine")
    capsys.readouterr()
    assert main(["ingest", SOURCE, f"s3://{BUCKET}/notes.zarr", "--no-progress", "--overwrite"]) == 2
    one_line(capsys.readouterr().err, f"s3://{BUCKET}/notes.zarr", "not a distlg signal store")
    assert s3.get_object(Bucket=BUCKET, Key="notes.zarr/readme.txt")["Body"].read() == b"mine"


def test_https_is_read_only_for_ingest(capsys, tmp_path):
    capsys.readouterr()
    assert main(["ingest", SOURCE, "https://example.invalid/clip.zarr", "--no-progress"]) == 2
    one_line(capsys.readouterr().err, "https://example.invalid/clip.zarr", "read-only", "s3://")


# -- reading ---------------------------------------------------------------------------------------
def test_s3_reads_what_the_local_store_holds(remote_store, local):
    served, here = open_signal(remote_store), open_signal(local)
    assert served.info.store == remote_store
    for box in (((0, 64), (0, 64)), ((3, 41), (5, 60))):
        assert np.array_equal(served.read(box), here.read(box))
    assert_same_stream(here, served, PartitionGrid((64, 64), (2, 2)), [0, 3], 50, steps=3)


def test_info_describes_the_s3_store_as_the_local_one(remote_store, local, capsys):
    capsys.readouterr()
    assert main(["info", remote_store]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"store       {remote_store} (distlg-signal version 1, complete)"
    assert lines[1:] == describe_store(str(local))[1:]
    assert "image y=64 x x=64, 3 channel(s), uint8, values 0..255" in lines[1]


def test_training_through_a_failing_server_gives_the_local_weights(remote_store, local_model,
                                                                  tmp_path):
    seen: dict = {}

    def every_other_get(method, key):  # the first, third, ... GET of each object fails
        seen[key] = seen.get(key, 0) + (method == "GET")
        return 500 if method == "GET" and seen[key] % 2 == 1 else None

    out = tmp_path / "run"
    with faults(every_other_get) as proxy:
        assert main(TRAIN + ["--signal", remote_store, "--out", str(out), "--steps", "5"]) == 0
    assert proxy.failed >= 17  # zarr.json and each of the 16 chunks failed once
    assert_equal_models(local_model, out / "model")


@pytest.mark.multiprocess
def test_two_workers_from_s3_match_one_local_process(remote_store, local, tmp_path):
    assert_two_workers_match_one_process(str(local), remote_store, tmp_path)


def test_render_compares_against_the_s3_store_as_against_the_local_one(remote_store, local,
                                                                      local_model, tmp_path, capsys):
    psnr = []
    for name, signal in (("a", remote_store), ("b", str(local))):
        capsys.readouterr()
        assert main(["render", str(local_model), "--out", str(tmp_path / f"{name}.npy"), "--compare", signal,
                     "--no-progress"]) == 0
        (line,) = [x for x in capsys.readouterr().out.splitlines() if x.startswith("PSNR")]
        assert signal in line
        psnr.append(line.rsplit(":", 1)[1])
    assert psnr[0] == psnr[1]


def test_extend_from_s3_gives_what_extend_from_the_local_store_gives(endpoint, tmp_path):
    clip = np.random.default_rng(1).integers(0, 256, (12, 8, 10, 3), dtype=np.uint8)
    np.save(tmp_path / "clip.npy", clip)
    url = f"s3://{BUCKET}/clip.zarr"
    for where in (url, str(tmp_path / "clip.zarr")):
        assert main(["ingest", str(tmp_path / "clip.npy"), where, "--kind", "video",
                     "--no-progress"]) == 0
    model = random_model(tmp_path / "first", (6, 8, 10), (2, 2, 1), "video")
    for name, signal in (("a", url), ("b", str(tmp_path / "clip.zarr"))):
        assert main(["extend", str(model), str(tmp_path / name), "--signal", signal, "--steps", "3",
                     "--samples-per-partition", "16", "--no-progress"]) == 0
    assert_equal_models(tmp_path / "a", tmp_path / "b")
    assert ModelDir.open(tmp_path / "a").partition_ids == list(range(8))


# -- failures --------------------------------------------------------------------------------------
@pytest.mark.parametrize("where, why", [(f"s3://{BUCKET}/missing.zarr", "no objects under it"),
                                        ("s3://no-such-bucket/clip.zarr", "NoSuchBucket")])
def test_a_missing_bucket_or_key_is_one_line(endpoint, where, why, tmp_path, capsys):
    capsys.readouterr()
    assert main(TRAIN + ["--signal", where, "--out", str(tmp_path / "run"), "--steps", "1"]) == 2
    one_line(capsys.readouterr().err, where, why)
    assert not (tmp_path / "run" / "model").exists()


def test_a_server_that_stops_answering_times_out(remote_store, monkeypatch):
    monkeypatch.setattr(remote, "TIMEOUT_S", 0.5)
    monkeypatch.setattr(remote, "TRIES", 2)
    monkeypatch.setattr(remote, "BACKOFF_S", 0.05)
    signal = open_signal(remote_store)
    with faults(lambda method, key: 3.0 if "/c/" in key else None):
        t0 = time.perf_counter()
        with pytest.raises(StoreError, match=f"{remote_store}.* after 2 tries") as caught:
            signal.read(((0, 16), (0, 16)))
        assert time.perf_counter() - t0 < 3
    assert "\n" not in str(caught.value) and "c/0/0/0" in str(caught.value)


def test_without_s3fs_the_extra_is_named(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "s3fs", None)
    capsys.readouterr()
    assert main(TRAIN + ["--signal", "s3://bucket/clip.zarr", "--out", str(tmp_path / "run"),
                         "--steps", "1"]) == 2
    one_line(capsys.readouterr().err, "reading s3:// stores needs `pip install 'distlg[s3]'`")


def test_missing_credentials_are_one_line(remote_store, monkeypatch, capsys):
    import s3fs

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance-metadata lookup
    s3fs.S3FileSystem.clear_instance_cache()  # the cached client holds the test's keys
    try:
        capsys.readouterr()
        assert main(["info", remote_store]) == 2
        one_line(capsys.readouterr().err, remote_store, "zarr.json", "AWS_ACCESS_KEY_ID")
    finally:
        s3fs.S3FileSystem.clear_instance_cache()


def test_models_export_and_crop_to_s3_and_render_from_there(endpoint, local_model, tmp_path, capsys):
    """A model exported and cropped to s3:// renders, from the bucket, what the local ones
    render; the root document is the last object written; an s3:// output that holds objects
    is refused in one line."""
    run = local_model.parent
    url = f"s3://{BUCKET}/models/exported"
    with faults(None) as proxy:
        assert main(["export", str(run), url, "--no-progress"]) == 0
        puts = [key for method, key, _ in proxy.log if method == "PUT"]
    assert puts[-1].endswith("exported/zarr.json")  # the root last: nothing half-written is a model
    cropped = f"s3://{BUCKET}/models/cropped"
    assert main(["crop", url, cropped, "--keep", "0:32", "--no-progress"]) == 0
    assert main(["info", cropped]) == 0
    assert "partitions  2 of 4 present" in capsys.readouterr().out
    for source, local in ((url, local_model), (cropped, local_model)):
        assert main(["render", source, "--region", "0:32,0:64", "--out", str(tmp_path / "s3.npy"),
                     "--no-progress"]) == 0
        assert main(["render", str(local), "--region", "0:32,0:64", "--out", str(tmp_path / "l.npy"),
                     "--no-progress"]) == 0
        assert np.array_equal(np.load(tmp_path / "s3.npy"), np.load(tmp_path / "l.npy"))
        (tmp_path / "s3.npy").unlink()
        (tmp_path / "l.npy").unlink()
    assert main(["export", str(run), url, "--no-progress"]) == 2
    one_line(capsys.readouterr().err, "already holds objects")
