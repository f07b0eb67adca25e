"""The viewer's web application (starlette): the page, and the renders it asks for.

Renders run in worker threads (at most ``threads`` at once), so the server keeps answering
while a tile is in progress; a request whose page has moved on (the browser cancelled it) is
dropped before its render starts. Answers are kept in a byte-bounded LRU cache, and a render
asked for twice while in progress runs once. An error answers the page with its one-line
message (JSON ``{"error": ...}``, which the page shows in its error panel) and prints that line
once on the terminal.
"""

from __future__ import annotations

import asyncio
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Awaitable, Callable

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..errors import DistlgError
from .views import ModelViews

STATIC = Path(__file__).resolve().parent / "static"
CACHE_BYTES = 256 << 20


class ByteCache:
    """Least recently used answers, up to ``limit`` bytes in all."""

    def __init__(self, limit: int = CACHE_BYTES):
        self.limit, self.size = limit, 0
        self.items: OrderedDict[str, tuple[bytes, str]] = OrderedDict()

    def get(self, key: str) -> tuple[bytes, str] | None:
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        return None

    def put(self, key: str, body: bytes, media: str) -> None:
        if len(body) > self.limit:
            return
        self.items[key] = (body, media)
        self.size += len(body)
        while self.size > self.limit:
            _, (old, _) = self.items.popitem(last=False)
            self.size -= len(old)


class Reporter:
    """Prints each distinct error once, as one line on stderr."""

    def __init__(self, stream=None):
        self.stream, self.seen = stream or sys.stderr, set()

    def __call__(self, message: str) -> None:
        if message not in self.seen:
            self.seen.add(message)
            print(f"distlg view: error: {message}", file=self.stream, flush=True)


def _int(request: Request, name: str, default: int | None = None) -> int:
    value = request.query_params.get(name, request.path_params.get(name))
    if value is None and default is not None:
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DistlgError(f"{name} must be a whole number, got {value!r}") from None


def make_app(views: ModelViews, threads: int = 2, report: Callable[[str], None] | None = None
             ) -> Starlette:
    """The application serving ``views``: the page at ``/``, its assets at ``/static``, and
    the renders under ``/api``."""
    cache, limiter = ByteCache(), asyncio.Semaphore(threads)
    running: dict[str, asyncio.Future] = {}
    report = report or Reporter()

    async def answer(request: Request, media: str, work: Callable[[], object]) -> Response:
        key = str(request.url.path) + "?" + str(request.url.query)
        hit = cache.get(key)
        if hit is None and key in running:
            try:
                hit = await asyncio.shield(running[key])
            except _Gone:  # its first asker left before it started: render it here
                hit = None
        if hit is None:
            future = asyncio.get_running_loop().create_future()
            running[key] = future
            try:
                hit = await _render(request, media, work)
                cache.put(key, *hit)
                future.set_result(hit)
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()  # retrieved: waiters re-raise it themselves
                raise
            finally:
                running.pop(key, None)
        body, media = hit
        return Response(body, media_type=media, headers={"Cache-Control": "no-store"})

    async def _render(request: Request, media: str, work: Callable[[], object]) -> tuple[bytes, str]:
        async with limiter:
            if await request.is_disconnected():
                raise _Gone()
            result = await run_in_threadpool(work)
        if isinstance(result, (bytes, bytearray)):
            return bytes(result), media
        import json

        return json.dumps(result).encode(), "application/json"

    def route(handler: Callable[[Request], Awaitable[Response]]):
        async def guarded(request: Request) -> Response:
            try:
                return await handler(request)
            except _Gone:
                return Response(status_code=499)
            except DistlgError as exc:
                report(str(exc))
                return JSONResponse({"error": str(exc)}, status_code=400)
            except Exception as exc:  # a bug: still one line, and the page says so
                message = f"{type(exc).__name__}: {exc}".splitlines()[0]
                report(message)
                return JSONResponse({"error": message}, status_code=500)
        return guarded

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def info(request: Request) -> Response:
        return JSONResponse(views.describe())

    async def tile(request: Request) -> Response:
        p = request.path_params
        args = (p["source"], p["plane"], _int(request, "level"), _int(request, "index"),
                _int(request, "ty"), _int(request, "tx"))
        return await answer(request, "image/png", lambda: views.tile(*args))

    async def wave(request: Request) -> Response:
        args = (request.path_params["source"], _int(request, "start"), _int(request, "stop"),
                _int(request, "columns"))
        return await answer(request, "application/json", lambda: views.wave(*args))

    async def clip(request: Request) -> Response:
        args = (_int(request, "start"), _int(request, "stop"))
        return await answer(request, "audio/wav", lambda: views.clip(*args))

    def _box(request: Request):
        plane = request.query_params.get("plane") or None
        box = views.box(plane, _int(request, "index", 0), request.query_params.get("box", ""))
        axes = (0,) if plane is None else (views.plane(plane).rows, views.plane(plane).cols)
        return box, axes

    async def psnr(request: Request) -> Response:
        box, axes = _box(request)
        return await answer(request, "application/json", lambda: views.psnr(box, axes))

    async def crop(request: Request) -> Response:
        box, axes = _box(request)
        return JSONResponse({"command": views.crop_command(box, axes)})

    async def goto(request: Request) -> Response:
        box = views.goto(request.query_params.get("box", ""))
        return JSONResponse({"box": [list(r) for r in box]})

    routes = [
        Route("/", route(page)),
        Route("/api/info", route(info)),
        Route("/api/tile/{source:str}/{plane:str}/{level}/{index}/{ty}/{tx}.png", route(tile)),
        Route("/api/wave/{source:str}", route(wave)),
        Route("/api/clip.wav", route(clip)),
        Route("/api/psnr", route(psnr)),
        Route("/api/crop", route(crop)),
        Route("/api/goto", route(goto)),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes)


class _Gone(Exception):
    """The page cancelled the request before its render started."""
