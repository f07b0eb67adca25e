"""The ``distlg`` command: one subcommand per step of the data path.

Errors in what the user asked for print one line and exit with status 2; ``--help`` on every
subcommand explains every option.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Callable, Sequence

from . import config as cfg
from .errors import DistlgError


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument in one line (no usage dump), status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.HelpFormatter(prog, max_help_position=32, width=100)


COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {}


def command(name: str, help_text: str):
    """Register ``fn(args) -> int`` as subcommand ``name``; ``fn.arguments(parser)`` adds options."""
    def wrap(fn):
        COMMANDS[name] = (help_text, fn)
        return fn
    return wrap


# -- train -------------------------------------------------------------------------------------
def _train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML, TOML or JSON file with signal/partition/"
                   "model/train/run sections; flags override it")
    cfg.add_arguments(p)


@command("train", "train a model (one process, or each worker of `accelerate launch`)")
def _train(args: argparse.Namespace) -> int:
    from .train import train

    config = cfg.from_args(args, args.config)
    result = train(config)
    if result.model is not None and _is_main():
        r, plan = result, result.plan
        total = plan.arch.total_params(plan.grid.num_partitions)
        ssim = f", SSIM {r.final.ssim:.4f}" if r.final.ssim is not None else ""
        print(f"trained {r.steps_run} steps in {r.seconds:.1f} s "
              f"({r.samples_per_second:,.0f} samples/s over {len(r.peak_rss_mib)} worker(s)); "
              f"PSNR {r.final.psnr:.2f} dB{ssim}; {total:,} parameters; model in {r.model_dir}")
        print("peak RSS per worker: " + ", ".join(f"{m:.0f} MiB" for m in r.peak_rss_mib)
              + f"; all-reduce {r.allreduce_bytes:,} B/step")
    return 0


_train.arguments = _train_arguments


def _is_main() -> bool:
    return os.environ.get("RANK", "0") == "0"


# -- entry point -------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="distlg", description="Distributed training of croppable Local-Global "
                     "implicit neural representations of large signals.",
                     formatter_class=_formatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=_Parser)
    for name, (help_text, fn) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=(fn.__doc__ or help_text),
                           formatter_class=_formatter)
        fn.arguments(p)
        p.set_defaults(func=fn)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        status = args.func(args)
    except DistlgError as exc:
        print(f"distlg {args.command}: error: {exc}", file=sys.stderr)
        status = 2
    except FileNotFoundError as exc:
        print(f"distlg {args.command}: error: {exc.strerror}: {exc.filename}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print(f"distlg {args.command}: interrupted", file=sys.stderr)
        status = 130
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # gloo's threads can abort at interpreter shutdown after a finished job; leave cleanly.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)
    return status
