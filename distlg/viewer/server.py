"""Serving the viewer: uvicorn on 127.0.0.1, on a port claimed before anything else starts.

The port is bound here first, so a port in use is one line (and exit status 2) before the
model is opened, and uvicorn then serves on that very socket: no window in which another
program could take it. ``--neuroglancer`` serves an OME-Zarr render (``distlg render ...
--out NAME.ome.zarr``) to a local neuroglancer instead: the store under ``/data/`` (with the
CORS headers neuroglancer's page needs) and neuroglancer's own viewer, from its Python package
(the ``neuroglancer`` extra), whose page is shipped in the package: nothing is fetched.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

from ..errors import DistlgError

HOST = "127.0.0.1"


class PortError(DistlgError):
    """A port the viewer cannot listen on."""


def claim(port: int, host: str = HOST) -> socket.socket:
    """A listening socket on ``host:port`` (0: any free port); one line if it is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortError(f"port {port} on {host} is in use (another viewer or program); "
                            "choose another with --port, or --port 0 for any free one") from None
        raise PortError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def run(app, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` until Ctrl-C (uvicorn, access log off: errors are printed
    once each by the app)."""
    import uvicorn

    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            timeout_graceful_shutdown=2)  # open pages keep connections alive
    uvicorn.Server(config).run(sockets=[sock])


def store_app(path: Path):
    """A starlette app serving the folder ``path`` (an OME-Zarr) under ``/data/`` to any
    origin (neuroglancer's page is served from another port)."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.middleware.cors import CORSMiddleware
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    return Starlette(routes=[Mount("/data", StaticFiles(directory=path))],
                     middleware=[Middleware(CORSMiddleware, allow_origins=["*"],
                                            allow_methods=["GET", "HEAD"], allow_headers=["*"],
                                            expose_headers=["*"])])


def check_ome(path: Path) -> str:
    """The OME-Zarr version of the group at ``path`` ("0.5" or "0.4"); one line if it is not
    one (``distlg render MODEL --out NAME.ome.zarr`` writes them)."""
    import json

    if (path / "zarr.json").is_file():
        attrs = json.loads((path / "zarr.json").read_text()).get("attributes", {})
        if "multiscales" in attrs.get("ome", {}):
            return "0.5"
    if (path / ".zattrs").is_file() and "multiscales" in json.loads((path / ".zattrs").read_text()):
        return "0.4"
    raise DistlgError(f"{path} is not an OME-Zarr image; write one with `distlg render MODEL "
                      "--out NAME.ome.zarr`")


def neuroglancer_source(url: str, version: str) -> str:
    """Neuroglancer's data-source string for an OME-Zarr served at ``url``."""
    return f"{'zarr3' if version == '0.5' else 'zarr2'}://{url.rstrip('/')}/"


def neuroglancer_viewer(source: str, name: str):
    """A local neuroglancer viewer showing ``source`` as an image layer; its URL is
    ``str(viewer)``. One line if the extra is not installed."""
    try:
        import neuroglancer
    except ImportError:
        raise DistlgError("--neuroglancer needs the neuroglancer package: pip install "
                          "'distlg[neuroglancer]'") from None
    neuroglancer.set_server_bind_address(HOST)
    viewer = neuroglancer.Viewer()
    with viewer.txn() as state:
        state.layers[name] = neuroglancer.ImageLayer(source=source)
    return viewer
