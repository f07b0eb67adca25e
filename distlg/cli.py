"""The ``distlg`` command: one subcommand per step of the data path.

Each subcommand lives in ``distlg/commands/<name>.py`` (HELP, ``arguments``, ``run``). Errors
in what the user asked for, and files or folders that cannot be read or written, print one
line and exit with status 2; ``--help`` on every
subcommand explains every option.

A SIGTERM (``kill``, ``timeout``, SLURM's ``scancel``) is handled as a Ctrl-C is, by whatever
SIGINT handler is current: a render removes its staging folder, a training finishes its step
(and, in one process, writes a checkpoint); the command prints one line and exits with 130.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import json
import os
import signal
import sys
import threading
import time
from typing import Iterator, Sequence

from . import __version__
from .errors import DistlgError, WorkerLost

COMMANDS = ("ingest", "pack", "train", "export", "crop", "render", "extend", "info", "view")
"""Subcommands, in the order of the data path."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (no usage dump), status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32, width=100)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="distlg", description="Distributed training of croppable Local-Global "
                     "implicit neural representations of large signals.",
                     formatter_class=_formatter)
    parser.add_argument("--version", action="version", version=f"distlg {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_Parser)
    for name in COMMANDS:
        module = importlib.import_module(f"distlg.commands.{name}")
        p = sub.add_parser(name, help=module.HELP, description=module.__doc__,
                           formatter_class=_formatter)
        module.arguments(p)
        p.set_defaults(func=module.run)
    return parser


def _terminate_as_interrupt(signum, frame) -> None:
    """SIGTERM's handler: run the current SIGINT handler (a ``KeyboardInterrupt``, or the
    trainer's wait for the end of the step); where SIGINT is ignored or left to the system, a
    ``KeyboardInterrupt``, so a SIGTERM always stops the command cleanly."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


@contextlib.contextmanager
def _sigterm_as_sigint() -> Iterator[None]:
    """SIGTERM handled as SIGINT while the block runs (in the main thread, where handlers can be
    set); the previous handler restored after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _report_to_launcher(line: str) -> None:
    """Under torch's elastic agent (``accelerate launch``, ``torchrun``), write ``line`` to the
    worker's error file: the launcher's closing summary of a failed job then shows it as the
    failure's cause, below its own traceback, instead of "To enable traceback see ..."."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    record = {"message": line, "extraInfo": {"py_callstack": line,
                                             "timestamp": str(int(time.time()))}}
    with contextlib.suppress(OSError):
        with open(path, "w") as fh:
            json.dump({"message": record}, fh)


def _settle_zarr(timeout: float = 5.0) -> None:
    """After an interrupt zarr's reads and writes still run on its event-loop thread (only the
    main thread stopped waiting for them): cancel them and let them unwind now, so that none is
    destroyed pending at exit, which asyncio reports in hundreds of lines."""
    sync = sys.modules.get("zarr.core.sync")
    loop = sync.loop[0] if sync is not None else None
    if loop is None or not loop.is_running():
        return

    async def cancel_the_rest() -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    with contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(cancel_the_rest(), loop).result(timeout)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    line = None
    try:
        with _sigterm_as_sigint():
            status = args.func(args)
    except DistlgError as exc:
        line, status = f"distlg {args.command}: error: {exc}", 2
    except OSError as exc:  # a missing input, a read-only or missing output folder, a full disk
        where = f": {exc.filename}" if exc.filename else ""
        line, status = f"distlg {args.command}: error: {exc.strerror or exc}{where}", 2
    except WorkerLost as exc:
        line, status = f"distlg {args.command}: error: {exc}", 1
    except KeyboardInterrupt as exc:
        detail = f" ({exc})" if str(exc) else ""
        line, status = f"distlg {args.command}: interrupted{detail}", 130
        _settle_zarr()
    if line is not None:
        print(line, file=sys.stderr)
        _report_to_launcher(line)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # gloo's threads can abort at interpreter shutdown after a finished job; leave cleanly.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status
