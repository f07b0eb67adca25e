"""``distlg view`` without a browser: bad input is one line and exit 2 before anything is
served; ``--neuroglancer``, as far as it can be checked offline (the OME-Zarr is served with the
CORS headers a neuroglancer page on another port needs, neuroglancer is told the right source,
and without the extra the command says what to install in one line)."""

import json
import threading
import time
import urllib.request

import numpy as np
import pytest
from faults.helpers import one_line
from modelkit import random_model

from distlg.cli import main

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
from distlg.viewer import server  # noqa: E402


@pytest.fixture
def ome(tmp_path):
    model = random_model(tmp_path / "vol", (16, 16, 16), (2, 2, 2), "volume", channels=1)
    out = tmp_path / "vol.ome.zarr"
    assert main(["render", str(model), "--out", str(out), "--levels", "2", "--no-progress"]) == 0
    return out


def test_the_store_is_served_to_another_origin(ome):
    import uvicorn

    assert server.check_ome(ome) == "0.5"
    sock = server.claim(0)
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(server.store_app(ome), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not srv.started and time.monotonic() < deadline:
            time.sleep(0.05)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/data/zarr.json",
                                         headers={"Origin": "http://127.0.0.1:9999"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert answer.headers["access-control-allow-origin"] == "*"
            assert json.load(answer)["attributes"]["ome"]["version"] == "0.5"
        ranged = urllib.request.Request(f"http://127.0.0.1:{port}/data/0/zarr.json",
                                        headers={"Range": "bytes=0-9"})
        with urllib.request.urlopen(ranged, timeout=10) as answer:
            assert answer.status == 206 and len(answer.read()) == 10
    finally:
        srv.should_exit = True
        thread.join(10)
        sock.close()
    url = f"http://127.0.0.1:{port}/data"
    assert server.neuroglancer_source(url, "0.5") == f"zarr3://{url}/"
    assert server.neuroglancer_source(url + "/", "0.4") == f"zarr2://{url}/"


def test_without_the_extra_or_an_ome_zarr_it_is_one_line(ome, tmp_path, capsys):
    try:
        import neuroglancer  # noqa: F401
    except ImportError:
        assert main(["view", str(ome), "--neuroglancer", "--port", "0"]) == 2
        one_line(capsys.readouterr().err, "pip install 'distlg[neuroglancer]'")
    assert main(["view", str(tmp_path / "vol"), "--neuroglancer", "--port", "0"]) == 2
    one_line(capsys.readouterr().err, "not an OME-Zarr")


def test_a_port_in_use_is_one_line(tmp_path, capsys):
    sock = server.claim(0)
    try:
        port = sock.getsockname()[1]
        model = random_model(tmp_path / "image", (16, 16), (2, 2), "image")
        assert main(["view", str(model), "--port", str(port)]) == 2
        one_line(capsys.readouterr().err, f"port {port}", "in use")
    finally:
        sock.close()


@pytest.mark.faults
def test_bad_input_is_one_line_before_anything_is_served(tmp_path, capsys):
    model = random_model(tmp_path / "image", (16, 16), (2, 2), "image")
    np.save(tmp_path / "other.npy", np.zeros((8, 16, 3), np.uint8))
    assert main(["ingest", str(tmp_path / "other.npy"), str(tmp_path / "other.zarr"), "--kind",
                 "image", "--no-progress"]) == 0
    capsys.readouterr()
    cases = [(["view", str(tmp_path / "nothing"), "--port", "0"], "not a directory"),
             (["view", str(model), "--port", "0", "--threads", "0"], "--threads"),
             (["view", str(model), "--port", "70000"], "--port"),
             (["view", str(model), "--port", "0", "--compare", str(tmp_path / "other.zarr")],
              "--compare")]
    for argv, word in cases:
        assert main(argv) == 2
        one_line(capsys.readouterr().err, word)


def test_a_tile_is_the_render_of_its_footprint_at_the_zoom_scale(tmp_path):
    """Tile (ty, tx) at level L is ``render`` of TILE * 2^-L samples a side at scale 2^L (finer
    than the grid for L > 0), the plane's other axis at the asked frame; a cropped partition's
    pixels are transparent."""
    import io

    from PIL import Image

    from distlg.rendering.render import render
    from distlg.rendering.writers import to_8bit
    from distlg.viewer.views import TILE, ModelViews

    video = random_model(tmp_path / "video", (6, 80, 70), (2, 2, 2), "video")
    assert main(["crop", str(video), str(tmp_path / "cropped"), "--drop-partitions", "7"]) == 0
    views = ModelViews(tmp_path / "cropped")
    for level, ty, tx in ((2, 1, 0), (-1, 0, 0), (0, 0, 0)):
        region, scale = views.tile_region(views.plane("yx"), level, 4, ty, tx)
        span = int(TILE * 2.0 ** -level)
        rows, cols = (ty * span, min(80, (ty + 1) * span)), (tx * span, min(70, (tx + 1) * span))
        assert region == ((4, 5), rows, cols)
        assert scale == (1.0, 2.0 ** level, 2.0 ** level)
        tile = np.asarray(Image.open(io.BytesIO(views.tile("model", "yx", level, 4, ty, tx))))
        expected = to_8bit(render(tmp_path / "cropped", region, scale, fill=0.0)[0])
        held = tile[..., 3] == 255
        assert np.array_equal(tile[..., :3][held], expected[held])
        if level == 0:  # partition 7 = (1, 1, 1): frame 4, rows 40-79, columns 35-69
            assert not held[40:, 35:].any() and held[:40].all() and held[:, :35].all()


def test_the_cache_keeps_the_newest_answers_within_its_bytes():
    from distlg.viewer.app import ByteCache

    cache = ByteCache(limit=10)
    for key in "abc":
        cache.put(key, b"1234", "image/png")
    assert cache.get("a") is None and cache.get("b") and cache.get("c") and cache.size == 8
    cache.get("b")  # b is now the newest: c goes first
    cache.put("d", b"1234", "image/png")
    assert cache.get("c") is None and cache.get("b") and cache.size == 8
    cache.put("huge", b"x" * 11, "image/png")
    assert cache.get("huge") is None
