"""Streaming a signal from an HTTP server: remote Zarr (plain chunks), remote Zarr (sharded) and a
pack (webdataset tar streams), each at 0, 20 and 100 ms of latency per request.

    python benchmarks/remote.py            # the bikes clip, 3 paths x 3 latencies; 17 min here
    python benchmarks/remote.py --quick    # 20 steps, 0 and 100 ms only; a smoke run (~5 min)
    python benchmarks/remote.py --sequential --latencies 100 --paths zarr --steps 20
                                           # as distlg read before: one chunk at a time

1. Ingests ../shared/data/bikes.mp4 (250x272x640x3 uint8, 130.6 MB) into storage/bench/remote/
   as a plain store, a sharded copy (``--shard auto``: one shard) and a pack of the plain one
   (``distlg pack``: one worker, one tar shard); kept for reruns.
2. Serves that folder from a subprocess (``--serve``, Python's ThreadingHTTPServer) that waits
   the latency before each answer, honours byte ranges (as object stores and web servers do),
   and sends every body through one shared token bucket of ``--mbps`` MB/s (the link), counting
   requests and bytes sent.
3. The trainer's consumption rate: the training step (fused forward/backward and Adam, one
   thread) on batches already in memory, the same batches the runs below draw.
4. For each path and latency, in this process: the streaming sampler alone (samples/s while it
   gathers, with nothing consuming; requests and bytes the server answered per window), then a
   short real training run (``distlg.training.trainer``, one thread, memory budget ``--budget-mib`` so
   the sampler streams) and the share of its training time it waited for data: the first
   window's fill, and the waits for later windows.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import run_config, write_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "storage" / "bench" / "remote"
CLIP = ROOT.parent / "shared" / "data" / "bikes.mp4"
SAMPLES = 200
"""Samples per partition per step: 800 partitions x 200 = 160,000 per step."""
PATHS = ("zarr", "sharded", "pack")
LABELS = {"zarr": "remote Zarr, plain chunks", "sharded": "remote Zarr, sharded",
          "pack": "pack (webdataset tar)"}


# -- the server ------------------------------------------------------------------------------------
def serve(root: str, latency_ms: float, mbps: float) -> None:
    """Serve ``root`` on a free port of 127.0.0.1 (printed as the first line) until killed."""
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    link = {"free": time.monotonic()}
    counts = {"requests": 0, "bytes": 0}
    lock = threading.Lock()

    def send(wfile, data: bytes) -> None:
        """Write ``data`` at the link's rate, shared with every other answer in flight."""
        for i in range(0, len(data), 64 << 10):
            piece = data[i:i + (64 << 10)]
            with lock:
                start = max(time.monotonic(), link["free"])
                link["free"] = start + len(piece) / (mbps * 1e6)
                counts["bytes"] += len(piece)
            time.sleep(max(0.0, link["free"] - time.monotonic()))
            wfile.write(piece)

    class Handler(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/stats":
                body = json.dumps(counts).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            with lock:
                counts["requests"] += 1
            time.sleep(latency_ms / 1000)
            path = Path(self.translate_path(self.path))
            if not path.is_file():
                self.send_error(404)
                return
            size = path.stat().st_size
            first, last = self._range(size)
            with open(path, "rb") as fh:
                fh.seek(first)
                data = fh.read(last - first)
            self.send_response(206 if (first, last) != (0, size) else 200)
            if (first, last) != (0, size):
                self.send_header("Content-Range", f"bytes {first}-{last - 1}/{size}")
            self.send_header("Content-Length", str(last - first))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            try:
                send(self.wfile, data)
            except (BrokenPipeError, ConnectionResetError):
                pass

        def _range(self, size: int) -> tuple[int, int]:
            """The byte range asked for (a single ``bytes=a-b``, ``a-`` or ``-n``), or all."""
            spec = self.headers.get("Range", "")
            if not spec.startswith("bytes=") or "," in spec:
                return 0, size
            a, b = spec[6:].split("-")
            if not a:
                return max(0, size - int(b)), size
            return int(a), min(size, int(b) + 1) if b else size

    server = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: Handler(*a, directory=root))
    print(server.server_port, flush=True)
    server.serve_forever()


class Server:
    """The ``--serve`` subprocess: its base URL and its request and byte counts."""

    def __init__(self, latency_ms: float, mbps: float):
        self.proc = subprocess.Popen([sys.executable, __file__, "--serve", str(BENCH),
                                      str(latency_ms), str(mbps)], stdout=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{int(self.proc.stdout.readline())}"

    def counts(self) -> dict:
        with urllib.request.urlopen(self.url + "/stats") as fh:
            return json.loads(fh.read())

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


# -- the signal, its copies and the trainer ---------------------------------------------------------
def prepare() -> None:
    """The plain store, its sharded copy and its pack under BENCH (kept between runs)."""
    BENCH.mkdir(parents=True, exist_ok=True)
    distlg = [sys.executable, "-m", "distlg"]
    for name, extra in (("bikes.zarr", []), ("bikes-sharded.zarr", ["--shard", "auto"])):
        subprocess.run(distlg + ["ingest", str(CLIP), str(BENCH / name), "--no-progress", *extra],
                       check=True)
    if not (BENCH / "bikes.pack" / "pack.json").is_file():
        subprocess.run(distlg + ["pack", str(BENCH / "bikes.zarr"), str(BENCH / "bikes.pack"),
                                 "--no-progress"], check=True)


def settings(budget_mib: float) -> dict:
    return {"samples_per_partition": SAMPLES, "memory_budget_gib": budget_mib / 1024, "threads": 1,
            "checkpoint_every": 0, "eval": "sample", "seed": 0}


def open_run(url: str | None, path: str, budget_mib: float):
    """(signal, plan, config) of a run of ``path`` (a local store when ``url`` is None)."""
    from distlg.config import Config
    from distlg.data.store import open_signal
    from distlg.training.plan import make_plan

    base = url or str(BENCH)
    store = f"{base}/bikes-sharded.zarr" if path == "sharded" else f"{base}/bikes.zarr"
    pack = f"{base}/bikes.pack" if path == "pack" else None
    config = Config().replace(path=store, pack=pack, **settings(budget_mib))
    signal = open_signal(store)
    return signal, make_plan(config, signal), config


def consumption(budget_mib: float, steps: int) -> dict:
    """Samples/s of the training step alone, on batches already in memory (one thread)."""
    import torch

    from distlg.data.resident import ResidentSampler
    from distlg.nn import fused
    from distlg.nn.model import INR

    torch.set_num_threads(1)
    signal, plan, _ = open_run(None, "zarr", budget_mib)
    pids = list(range(plan.grid.num_partitions))
    sampler = ResidentSampler(signal, plan.grid, pids, SAMPLES)
    batches = [sampler.batch(step) for step in range(steps)]
    model = INR(plan.arch, pids, seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=plan.lr)
    scale = 1.0 / (plan.samples_per_step * signal.channels)
    t0 = time.perf_counter()
    for batch in batches:
        fused.forward_backward(model, batch.coords, batch.values, scale)
        optimizer.step()
        optimizer.zero_grad(set_to_none=False)
    seconds = time.perf_counter() - t0
    return {"samples_per_s": steps * plan.samples_per_step / seconds, "step_s": seconds / steps,
            "samples_per_step": plan.samples_per_step,
            "params": plan.arch.total_params(plan.grid.num_partitions)}


def sampler_alone(server: Server, path: str, budget_mib: float, windows: int) -> dict:
    """The streaming sampler with nothing consuming: its samples/s over the ``windows`` windows
    after the first (each gathered while nothing else runs), and what the server answered per
    window."""
    from distlg.data.pack import open_pack
    from distlg.data.sampler import make_sampler

    signal, plan, config = open_run(server.url, path, budget_mib)
    pids = list(range(plan.grid.num_partitions))
    source = open_pack(config.signal.pack).source(signal, plan.grid, 1, 0) if config.signal.pack else None
    sampler = make_sampler(signal, plan.grid, pids, SAMPLES, 0, int(budget_mib * 2**20), source=source)
    try:
        t0 = time.perf_counter()
        sampler.batch(0)
        fill = time.perf_counter() - t0
        gathered, before = dict(sampler.stats), server.counts()
        for window in range(1, windows + 1):  # waits for each window's gather: nothing else runs
            sampler.batch(window * sampler.window)
    finally:
        sampler.close()  # after the gather in flight
    stats, after = sampler.stats, server.counts()
    count = stats["windows"] - gathered["windows"]
    seconds = stats["gather_s"] - gathered["gather_s"]
    return {"fill_s": fill, "window": sampler.window, "describe": sampler.describe(),
            "samples_per_s": count * sampler.window * plan.samples_per_step / seconds,
            "requests_per_window": (after["requests"] - before["requests"]) / count,
            "mb_per_window": (after["bytes"] - before["bytes"]) / count / 1e6}


def training(server: Server, path: str, budget_mib: float, steps: int) -> dict:
    """A short real run of ``distlg.training.trainer`` from the server: its rate and its waits for data."""
    signal, _, config = open_run(server.url, path, budget_mib)
    store, pack = config.signal.path, config.signal.pack
    result = run_config(signal, path=store, pack=pack, steps=steps, **settings(budget_mib))
    stats = result.sampler_stats
    return {"seconds": result.seconds, "samples_per_s": result.samples_per_second,
            "fill_s": stats["fill_s"], "wait_s": stats["wait_s"], "windows": stats["windows"],
            "wait_share": (stats["fill_s"] + stats["wait_s"]) / result.seconds,
            "wait_share_after_fill": stats["wait_s"] / (result.seconds - stats["fill_s"]),
            "psnr": result.final.psnr}


# -- report ----------------------------------------------------------------------------------------
def report(args, trainer: dict, rows: list[dict], minutes: float) -> None:
    lines = [
        f"Signal: `{CLIP.name}`, 250x272x640x3 uint8 (130.6 MB; 50.2 MB as stored, Blosc/zstd), "
        f"grid 5x8x20 = 800 partitions, {SAMPLES} samples per partition per step "
        f"({trainer['samples_per_step']:,} per step), {trainer['params']:,} parameters; memory "
        f"budget {args.budget_mib:g} MiB (the streaming sampler, not the resident one); one "
        f"training thread. Server: a subprocess on 127.0.0.1, the latency before every answer, "
        f"byte ranges honoured, all answers sharing one {args.mbps:g} MB/s link.",
        "",
        f"Trainer alone (batches in memory): {trainer['samples_per_s']:,.0f} samples/s "
        f"({trainer['step_s'] * 1000:.0f} ms per step).",
        "",
        "| path | latency | sampler alone, samples/s | x trainer | first window | requests / window "
        "| MB / window | training samples/s | waiting share | after the first window |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s, t = r["sampler"], r["train"]
        lines.append(
            f"| {LABELS[r['path']]} | {r['latency']:g} ms | {s['samples_per_s']:,.0f} | "
            f"{s['samples_per_s'] / trainer['samples_per_s']:.1f} | {s['fill_s']:.2f} s | "
            f"{s['requests_per_window']:,.0f} | {s['mb_per_window']:.1f} | "
            f"{t['samples_per_s']:,.0f} | {100 * t['wait_share']:.1f} % | "
            f"{100 * t['wait_share_after_fill']:.1f} % |")
    first = rows[0]["sampler"]
    lines += ["", f"- sampler: {first['describe']}",
              f"- training runs: {args.steps} steps each, {rows[0]['train']['windows']} windows; "
              "waiting share = (first window's fill + waits for later windows) / training time; "
              "the last column leaves the first fill out",
              f"- run time: {minutes:.1f} min"]
    print("\n".join(lines))
    name = args.name or ("remote_sequential" if args.sequential else
                         "remote_quick" if args.quick else "remote")
    write_results(name,
                  "Streaming from an HTTP server: plain Zarr, sharded Zarr and a pack", lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer steps, 2 latencies")
    parser.add_argument("--latencies", type=float, nargs="+", help="ms per request (default 0 20 100)")
    parser.add_argument("--mbps", type=float, default=100.0, help="the server's link, MB/s")
    parser.add_argument("--budget-mib", type=float, default=64.0, help="memory budget of the runs")
    parser.add_argument("--steps", type=int, default=60, help="steps of each training run")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--sequential", action="store_true",
                        help="read as distlg did before: one chunk at a time, windows as for a "
                             "local store (results/remote_sequential.md)")
    parser.add_argument("--name", help="results file name (default remote, remote_quick or "
                                           "remote_sequential)")
    parser.add_argument("--serve", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], float(args.serve[1]), float(args.serve[2]))
        return
    latencies = args.latencies or ([0, 100] if args.quick else [0, 20, 100])
    if args.quick:
        args.steps = min(args.steps, 20)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if args.sequential:
        from distlg.data import stream

        stream.read_ahead = lambda *_: 1
        stream.REMOTE_BYTES_PER_SAMPLE = stream.BYTES_PER_SAMPLE
    t0 = time.perf_counter()
    prepare()
    trainer = consumption(args.budget_mib, 5 if args.quick else 15)
    print("trainer:", trainer)
    rows = []
    for latency in latencies:
        server = Server(latency, args.mbps)
        try:
            for path in args.paths:
                row = {"path": path, "latency": latency,
                       "sampler": sampler_alone(server, path, args.budget_mib, 1 if args.quick else 2),
                       "train": training(server, path, args.budget_mib, args.steps)}
                print(json.dumps(row))
                rows.append(row)
        finally:
            server.stop()
    report(args, trainer, rows, (time.perf_counter() - t0) / 60)


if __name__ == "__main__":
    main()
