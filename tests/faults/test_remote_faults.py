"""A training run streaming from an https store whose server is killed mid-run: a one-line
error naming the URL and the chunk, well within a minute; the last checkpoint whole; and, once
the server is back on the same port, --resume ends with the weights of an uninterrupted run.

The server is Python's ``http.server`` in a thread of this process, killed from inside the
handler at the first chunk request after the run's first checkpoint (step 4): the streaming
sampler is then gathering a later window. Which checkpoint is the last depends on when that
gather ran (it runs beside the steps, so a window may be read before or after step 4's
checkpoint lands): step 4 or step 8, never the end.
"""

from __future__ import annotations

import functools
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import torch
from helpers import one_line

from distlg.cli import main
from distlg.modeldir.format import ModelDir
from distlg.training import checkpoint

TRAIN = ["train", "--factors", "2", "2", "--samples-per-partition", "8", "--params", "2000",
         "--steps", "12", "--seed", "3", "--checkpoint-every", "4", "--threads", "1",
         "--memory-budget-gib", "3.5e-6",  # under the 4 KiB image: streams, windows of 4 steps
         "--no-tensorboard", "--no-progress"]


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class Dying(Quiet):
    """Answers until ``after`` exists; the next chunk request kills the server instead."""

    server_ref: list[ThreadingHTTPServer] = []
    after = Path("/nonexistent")

    def do_GET(self) -> None:
        if "/c/" in self.path and self.after.exists():
            server = self.server_ref[0]
            threading.Thread(target=lambda: (server.shutdown(), server.server_close())).start()
            self.close_connection = True
            return  # no answer: the connection drops
        super().do_GET()


def start(root: Path, port: int = 0, handler=Dying) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", port), functools.partial(handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def weights(path: Path) -> dict[str, torch.Tensor]:
    model = ModelDir.open(path).load()
    return model.state_dict()


def test_a_server_killed_mid_run_is_one_line_and_resume_completes(tmp_path, capsys):
    root = tmp_path / "served"
    assert main(["ingest", "builtin:camera@64x64", str(root / "camera.zarr"), "--chunks", "16", "16",
                 "--no-progress"]) == 0
    assert main(TRAIN + ["--signal", str(root / "camera.zarr"), "--out", str(tmp_path / "ref")]) == 0
    Dying.after = tmp_path / "run" / "checkpoints" / "step-00000004"
    server = start(root)
    Dying.server_ref[:] = [server]
    port = server.server_port
    url = f"http://127.0.0.1:{port}/camera.zarr"
    run = TRAIN + ["--signal", url, "--out", str(tmp_path / "run")]
    capsys.readouterr()
    t0 = time.perf_counter()
    assert main(run) == 2
    assert time.perf_counter() - t0 < 60
    one_line(capsys.readouterr().err, url, "could not read c/")
    last = checkpoint.latest(tmp_path / "run")
    assert last is not None and last.name in ("step-00000004", "step-00000008")
    assert weights(last)  # whole: its manifest, files and hashes check out
    assert not (tmp_path / "run" / "model").exists()

    back = start(root, port, Quiet)  # the same port: the same URL
    try:
        assert main(run + ["--resume"]) == 0
    finally:
        back.shutdown()
        back.server_close()
    resumed, uninterrupted = weights(tmp_path / "run" / "model"), weights(tmp_path / "ref" / "model")
    assert resumed.keys() == uninterrupted.keys()
    assert all(torch.equal(v, uninterrupted[k]) for k, v in resumed.items())
