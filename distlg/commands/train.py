"""Train a model: one process, or each worker of ``accelerate launch``.

Settings come from an optional YAML/TOML/JSON file (sections signal, partition, model, train,
run) and flags, which override it. Under ``accelerate launch`` every worker runs this command;
each trains its own block of partitions and the global branch is kept in sync.
"""

from __future__ import annotations

import argparse
import os

from .. import flags

HELP = "train a model (one process, or each worker of `accelerate launch`)"


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", help="YAML, TOML or JSON file with signal/partition/"
                   "model/train/run sections; flags override it")
    flags.add_arguments(p)


def run(args: argparse.Namespace) -> int:
    from ..training.trainer import train

    result = train(flags.from_args(args, args.config))
    if os.environ.get("RANK", "0") != "0":
        return 0
    r, plan = result, result.plan
    total = plan.arch.total_params(plan.grid.num_partitions)
    print(f"trained {r.steps_run} steps in {r.seconds:.1f} s "
          f"({r.samples_per_second:,.0f} samples/s over {len(r.peak_rss_mib)} worker(s)); "
          f"{r.final.describe()}; {total:,} parameters; model in {r.model_dir}")
    print("peak RSS per worker: " + ", ".join(f"{m:.0f} MiB" for m in r.peak_rss_mib)
          + f"; all-reduce {r.allreduce_bytes:,} B/step")
    print("time: " + ", ".join(f"{name} {s:.1f} s" for name, s in r.phases.items()))
    return 0
