"""The viewer in a real browser: Debian's chromium driven by playwright, the viewer started and
stopped as a user would (``distlg view``, a subprocess). Screenshots go into each test's
temporary folder."""

from __future__ import annotations

import select
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from modelkit import random_model

from distlg.cli import main

playwright_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
BG = [32, 32, 32, 255]
"""The canvas background: where a model holds no partition, the page shows it."""
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed "
                                "(apt-get install chromium)")


def remove_partition_file(model: Path, pid: int) -> None:
    """Delete the file holding partition ``pid``'s weights (its shard) while the model still
    lists it."""
    from modelkit import partition_object

    partition_object(model, pid).unlink()


class Viewer:
    """``distlg view`` in a subprocess: its URL, and what it printed once stopped."""

    def __init__(self, *args: str, cwd: Path, port: int = 0):
        cmd = [sys.executable, "-m", "distlg", "view", *args, "--port", str(port)]
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.url, self.err = None, ""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            if select.select([self.proc.stdout], [], [], 0.5)[0]:
                line = self.proc.stdout.readline()
                if "http://" in line:
                    self.url = line[line.index("http://"):].split()[0]
                    return

    def stop(self) -> str:
        """Ctrl-C the server (kill it if it does not stop) and return its stderr."""
        if self.proc.stderr.closed:
            return self.err
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.err = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return self.err

    def error_lines(self) -> list[str]:
        """What it printed on stderr, less the line a Ctrl-C ends it with."""
        return [line for line in self.err.splitlines()
                if line.strip() and line != "distlg view: interrupted"]


@pytest.fixture(scope="module")
def browser():
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1300, "height": 900})
    pg = context.new_page()
    yield pg
    context.close()


@pytest.fixture
def viewers():
    started: list[Viewer] = []

    def start(*args, cwd, port=0) -> Viewer:
        v = Viewer(*args, cwd=cwd, port=port)
        started.append(v)
        return v

    yield start
    for v in started:
        v.stop()


def open_page(page, url: str, hash_: str = "") -> None:
    page.goto(url + hash_)
    page.wait_for_function("window.distlgViewer && distlgViewer.info !== null || "
                           "distlgViewer.errors.length > 0", timeout=20000)


def settle(page, timeout: float = 30000) -> None:
    """Wait until every tile (or waveform) on screen has arrived."""
    page.wait_for_function("distlgViewer.ready()", timeout=timeout)
    page.wait_for_timeout(100)
    page.wait_for_function("distlgViewer.ready()", timeout=timeout)


def pixels(page, panel: int, box, source: str = "model") -> np.ndarray:
    """RGBA pixels [n, 4] of the canvas over a box of samples (r0, c0, r1, c1)."""
    data = page.evaluate(f"distlgViewer.panel({panel}).pixels('{source}', {', '.join(map(str, box))})")
    return np.asarray(data, np.uint8).reshape(-1, 4)


def digest(page, panel: int = 0) -> int:
    """A hash of the panel's model canvas (computed in the page: its pixels are many)."""
    return page.evaluate(f"distlgViewer.panel({panel}).digest('model')")


def set_slider(page, panel: int, value: int) -> None:
    page.evaluate(f"""(() => {{ const s = distlgViewer.panel({panel}).slider; s.value = {value};
                      s.dispatchEvent(new Event('input')); }})()""")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    random_model(root / "image", (64, 96), (2, 3), "image")
    random_model(root / "video", (8, 48, 64), (2, 2, 2), "video", meta={"fps": 10.0})
    random_model(root / "volume", (24, 32, 32), (2, 2, 2), "volume", channels=1)
    random_model(root / "audio", (4000,), (4,), "audio", channels=1, dtype="int16",
                 value_range=(-1000.0, 1000.0), meta={"sample_rate": 8000})
    return root


@pytest.mark.parametrize("kind", ["image", "video", "volume", "audio"])
def test_each_kind_shows_its_first_tile_fast_and_its_sliders_move(kind, models, page, viewers,
                                                                   tmp_path):
    viewer = viewers(str(models / kind), cwd=models)
    assert viewer.url, viewer.stop()
    open_page(page, viewer.url)
    settle(page)
    first = page.evaluate("distlgViewer.firstTileMs")
    assert first is not None and first < 2000, first  # ms from navigation to the first tile
    page.screenshot(path=str(tmp_path / f"view-{kind}.png"))
    if kind in ("video", "volume"):
        planes = 1 if kind == "video" else 3
        for panel in range(planes):
            before = digest(page, panel)
            n = page.evaluate(f"distlgViewer.info.shape[distlgViewer.panel({panel}).fixed]")
            set_slider(page, panel, n - 1)
            settle(page)
            assert page.evaluate(f"distlgViewer.panel({panel}).index") == n - 1
            assert digest(page, panel) != before  # another frame / slice, another picture
        page.screenshot(path=str(tmp_path / f"view-{kind}-moved.png"))
    if kind == "image":  # zoomed in past the grid: tiles render at scale 2^level > 1
        box = page.locator("canvas").first.bounding_box()
        page.mouse.move(box["x"] + 200, box["y"] + 200)
        for _ in range(6):
            page.mouse.wheel(0, -400)
        settle(page)
        assert page.evaluate("distlgViewer.panel(0).level") >= 4
        assert page.evaluate("distlgViewer.panel(0).zoom") > 8
        page.screenshot(path=str(tmp_path / "view-image-zoomed.png"))
    if kind == "audio":
        box = page.locator("canvas").first.bounding_box()
        page.mouse.move(box["x"] + 600, box["y"] + 150)
        for _ in range(8):
            page.mouse.wheel(0, -400)
        settle(page)
        wave = page.evaluate("[distlgViewer.panel(0).spp, distlgViewer.panel(0).data.model]")
        assert wave[0] < 1  # fewer than one sample a pixel: rendered finer than the grid
        assert len(wave[1]["low"]) > wave[1]["stop"] - wave[1]["start"]
        clip = page.evaluate("fetch('/api/clip.wav?start=0&stop=800').then(r => r.arrayBuffer())"
                             ".then(b => b.byteLength)")
        assert clip == 44 + 800 * 2  # a RIFF header and 800 16-bit samples
    assert not page.evaluate("distlgViewer.errors")
    viewer.stop()
    assert viewer.error_lines() == []


def test_ground_truth_beside_the_model_and_the_psnr_of_what_is_visible(models, page, viewers,
                                                                         tmp_path, capsys):
    truth = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    np.save(tmp_path / "truth.npy", truth)
    store = tmp_path / "truth.zarr"
    assert main(["ingest", str(tmp_path / "truth.npy"), str(store), "--kind", "image",
                 "--no-progress"]) == 0
    assert main(["render", str(models / "image"), "--out", str(tmp_path / "r.npy"), "--compare",
                 str(store), "--no-progress"]) == 0
    expected = float(capsys.readouterr().out.split("PSNR of the region against")[1].split(":")[1]
                     .split("dB")[0])
    viewer = viewers(str(models / "image"), "--compare", str(store), cwd=models)
    open_page(page, viewer.url)
    settle(page)
    page.wait_for_function("distlgViewer.psnr !== undefined", timeout=20000)
    psnr = page.evaluate("distlgViewer.psnr")
    assert psnr["values"] == 64 * 96 * 3 and psnr["psnr"] == pytest.approx(expected, abs=0.006)
    assert "PSNR of the visible part" in page.inner_text("#psnr")
    truth_px = pixels(page, 0, (10, 10, 11, 11), "truth")  # one sample, drawn as a block
    assert np.all(truth_px[:, :3] == truth[10, 10])
    page.screenshot(path=str(tmp_path / "view-compare.png"))


def test_a_cropped_model_shows_its_hole_and_a_crop_box_gives_a_new_one(models, page, viewers,
                                                                        tmp_path):
    work = tmp_path / "work"
    shutil.copytree(models / "image", work / "image")
    assert main(["crop", str(work / "image"), str(work / "cropped"), "--keep", "0:32,0:64"]) == 0
    viewer = viewers("cropped", cwd=work)  # kept: partitions (0, 0) and (0, 1) of 2 x 3
    open_page(page, viewer.url)
    settle(page)
    page.screenshot(path=str(tmp_path / "view-cropped.png"))
    page.uncheck("#show-missing")
    settle(page)
    assert np.all(pixels(page, 0, (40, 70, 50, 80)) == BG)  # partition (1, 2): the hole
    assert np.all(pixels(page, 0, (40, 5, 50, 15)) == BG)  # partition (1, 0)
    kept = pixels(page, 0, (5, 5, 25, 60))
    assert not np.all(kept == BG) and np.all(kept[:, 3] == 255)
    # shift-drag a box over partition (0, 0) only: its command keeps that one
    canvas = page.locator("canvas").first.bounding_box()
    corners = page.evaluate("[distlgViewer.panel(0).toScreen(3, 3), distlgViewer.panel(0).toScreen(20, 25)]")
    page.keyboard.down("Shift")
    page.mouse.move(canvas["x"] + corners[0][0], canvas["y"] + corners[0][1])
    page.mouse.down()
    page.mouse.move(canvas["x"] + corners[1][0], canvas["y"] + corners[1][1], steps=5)
    page.mouse.up()
    page.keyboard.up("Shift")
    page.wait_for_function("distlgViewer.cropCommand !== undefined", timeout=10000)
    command = page.input_value("#crop")
    assert command == "distlg crop cropped cropped-crop --keep y=3:21,x=3:26"
    page.click("#copy")
    page.screenshot(path=str(tmp_path / "view-crop-box.png"))
    argv = shlex.split(command)
    done = subprocess.run([sys.executable, "-m", *argv], cwd=work, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    again = viewers("cropped-crop", cwd=work)
    open_page(page, again.url)
    settle(page)
    page.uncheck("#show-missing")
    settle(page)
    assert np.all(pixels(page, 0, (5, 40, 25, 60)) == BG)  # partition (0, 1): the new hole
    assert not np.all(pixels(page, 0, (5, 5, 25, 25)) == BG)  # partition (0, 0) stays
    assert page.evaluate("distlgViewer.info.missing") == [1, 2, 3, 4, 5]
    page.screenshot(path=str(tmp_path / "view-cropped-again.png"))


def test_errors_are_one_line_in_the_terminal_and_a_panel_in_the_page(models, page, viewers,
                                                                      tmp_path):
    work = tmp_path / "work"
    shutil.copytree(models / "image", work / "broken")
    remove_partition_file(work / "broken", 4)  # the manifest still lists it
    viewer = viewers("broken", cwd=work)
    open_page(page, viewer.url)
    page.wait_for_selector("#error:not([hidden])", timeout=20000)
    assert "missing" in page.inner_text("#error-text")
    settle(page)  # the other tiles still arrive: the page is not hung
    assert not np.all(pixels(page, 0, (5, 5, 25, 25)) == BG)
    page.screenshot(path=str(tmp_path / "view-error-missing-file.png"))
    lines = (viewer.stop(), viewer.error_lines())[1]
    assert len(lines) == 1 and lines[0].startswith("distlg view: error:") and "missing" in lines[0]

    good = viewers("image", cwd=models)
    open_page(page, good.url, "#region=0:999")  # a region outside the signal
    page.wait_for_selector("#error:not([hidden])", timeout=20000)
    assert "outside the signal" in page.inner_text("#error-text")
    settle(page)
    page.screenshot(path=str(tmp_path / "view-error-region.png"))

    port = int(good.url.rsplit(":", 1)[1].strip("/"))
    taken = viewers("image", cwd=models, port=port)  # the same port: refused at once
    assert taken.url is None and taken.proc.wait(30) == 2
    lines = (taken.stop(), taken.error_lines())[1]
    assert len(lines) == 1 and f"port {port}" in lines[0] and "in use" in lines[0]
    assert page.evaluate("fetch('/api/info').then(r => r.ok)")  # the first viewer still serves

    good.stop()  # the server goes away: the next request shows a panel, never a hung page
    lines = good.error_lines()
    assert len(lines) == 1 and "outside the signal" in lines[0], lines
    page.click("#error-close")
    page.fill("#goto", "0:32,0:32")
    page.press("#goto", "Enter")
    page.wait_for_selector("#error:not([hidden])", timeout=20000)
    assert "cannot be reached" in page.inner_text("#error-text")
    page.screenshot(path=str(tmp_path / "view-error-stopped.png"))
