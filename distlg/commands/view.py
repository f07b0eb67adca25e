"""Look at a model in the browser: a local page on 127.0.0.1 that renders, on demand, exactly
what is on screen.

Images pan and zoom (wheel, drag); a video has a frame slider and play; a volume three
orthogonal slices with a slider each; audio a zoomable waveform and play. Tiles are rendered at
the zoom's scale, finer than the signal's grid when zoomed in (the model is continuous), in
worker threads while the page stays responsive, and cached. Overlays: the partition grid, and
partitions the model no longer holds (a cropped model shows its hole). With --compare the
ground truth is shown beside the model, with the PSNR of the part on screen. Shift-drag a box
(or press "box") to get the `distlg crop --keep ...` command that keeps it.

    distlg view storage/runs/demo/model                          # then open the printed URL
    distlg view MODEL --compare storage/signals/astronaut-256.zarr --port 8080
    distlg view region.ome.zarr --neuroglancer                   # an OME-Zarr render in neuroglancer

Needs the view extra: pip install 'distlg[view]' (starlette, uvicorn); --neuroglancer also
pip install 'distlg[neuroglancer]'. Errors (a missing partition file, a region outside the
signal) print one line here and show in the page's error panel. Ctrl-C stops the server.
"""

from __future__ import annotations

import argparse

HELP = "look at a model in the browser: pan, zoom, slices, frames, crop boxes, ground truth"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="model directory (or, with --neuroglancer, an OME-Zarr render)")
    p.add_argument("--compare", metavar="SIGNAL",
                   help="ground truth to show beside the model, with the PSNR of what is on "
                   "screen: the store the model encodes (or builtin:NAME@HxW)")
    p.add_argument("--port", type=int, default=8000,
                   help="port on 127.0.0.1 to serve the page on (default: 8000; 0: any free port)")
    p.add_argument("--threads", type=int, default=2, metavar="N",
                   help="renders running at once, and torch's threads (default: 2)")
    p.add_argument("--neuroglancer", action="store_true",
                   help="serve MODEL, an OME-Zarr render (`distlg render ... --out "
                   "NAME.ome.zarr`), to a local neuroglancer instead (the neuroglancer extra)")


def run(args: argparse.Namespace) -> int:
    from ..errors import DistlgError
    from ..viewer import server

    if args.threads < 1:
        raise DistlgError(f"--threads needs at least 1, got {args.threads}")
    if not 0 <= args.port <= 65535:
        raise DistlgError(f"--port must be 0 to 65535, got {args.port}")
    if args.neuroglancer:
        return _neuroglancer(args)
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise DistlgError("distlg view needs starlette and uvicorn: pip install 'distlg[view]'") from None
    sock = server.claim(args.port)
    try:
        import torch

        from ..data.store import open_signal
        from ..viewer.app import make_app
        from ..viewer.views import ModelViews

        torch.set_num_threads(args.threads)
        truth = open_signal(args.compare) if args.compare else None
        views = ModelViews(args.model, truth)
        views.warm()
        app = make_app(views, args.threads)
        port = sock.getsockname()[1]
        print(f"distlg view: {args.model} ({views.info.kind}, {len(views.md.partition_ids)} of "
              f"{views.grid.num_partitions} partitions) at http://{server.HOST}:{port}/ "
              "(Ctrl-C stops)", flush=True)
        server.run(app, sock)
    finally:
        sock.close()
    return 0


def _neuroglancer(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..viewer import server

    path = Path(args.model)
    version = server.check_ome(path)
    sock = server.claim(args.port)
    try:
        url = f"http://{server.HOST}:{sock.getsockname()[1]}/data"
        viewer = server.neuroglancer_viewer(server.neuroglancer_source(url, version), path.name)
        print(f"distlg view: {path} (OME-Zarr {version}) served at {url}/; neuroglancer at "
              f"{viewer} (Ctrl-C stops)", flush=True)
        server.run(server.store_app(path), sock)
    finally:
        sock.close()
    return 0
