"""Defaults that train: each kind's learning rate and schedule against a small sweep.

    python benchmarks/sweep.py --signals phantom blobs          # results/sweep.md
    python benchmarks/sweep.py --signals bach counting --name sweep_audio

For each signal (the settings of benchmarks/fidelity.py: its partitions, samples per step and
step count), distlg's default recipe trains once per learning rate x schedule of the sweep
(seed 0, one thread), and once with nothing set, i.e. the kind's defaults
(``distlg/defaults.py``), unless those are a setting of the sweep. The table gives each run's
final PSNR; the last columns the best of the sweep and how far the defaults are from it (the
goal: within 0.5 dB on every signal of the kind). Writes results/NAME.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, provenance, run_config, write_results  # noqa: E402
from fidelity import SCRATCH, signal_settings  # noqa: E402

LRS = (1e-4, 3e-4, 1e-3, 3e-3)
SCHEDULES = ("constant", "cosine")
GOAL_DB = 0.5


def sweep_signal(name: str, lrs, schedules, steps_scale: float) -> list[dict]:
    """One row per signal of ``name`` (the photo set has five): PSNR per (lr, schedule) and
    with the defaults, plus the kind's defaults as they resolved."""
    from distlg import defaults
    from distlg.data.store import open_signal

    kind, signals = signal_settings(name)
    rows = []
    for base in signals:
        base = {**base, "steps": max(1, round(base["steps"] * steps_scale)), "eval_every": 0}
        signal = open_signal(base["path"])
        row = dict(signal=base["path"].split("/")[-1].removeprefix("builtin:"), kind=kind,
                   steps=base["steps"], runs={})
        for lr in lrs:
            for schedule in schedules:
                row["runs"][(lr, schedule)] = _run(name, signal, base, lr=lr, schedule=schedule)
        d = defaults.for_kind(kind)
        row["default_setting"] = setting = (d.lr, d.schedule)
        row["default"] = row["runs"][setting] if setting in row["runs"] else _run(name, signal, base)
        rows.append(row)
    return rows


def _run(name: str, signal, base: dict, **settings) -> float:
    t0 = time.perf_counter()
    r = run_config(signal=signal, seed=0, threads=1, out=str(SCRATCH / "sweep" / name),
                   **{**base, **settings})
    label = ", ".join(f"{k} {v}" for k, v in settings.items()) or "defaults"
    print(f"{name} {base['path']} {label}: {r.final.psnr:.2f} dB ({time.perf_counter() - t0:.0f} s)",
          flush=True)
    return r.final.psnr


def table(rows: list[dict], lrs, schedules) -> list[str]:
    settings = [(lr, s) for lr in lrs for s in schedules]
    head = " | ".join(f"{lr:g} {s}" for lr, s in settings)
    lines = [f"| signal (kind, steps) | {head} | defaults (lr, schedule) | best of the sweep | "
             f"defaults - best (goal >= -{GOAL_DB}) |",
             "|---" * (len(settings) + 4) + "|"]
    for row in rows:
        best_setting = max(settings, key=lambda k: _finite(row["runs"][k]))
        best = row["runs"][best_setting]
        gap = row["default"] - best
        cells = " | ".join(f"**{row['runs'][k]:.2f}**" if k == best_setting else f"{row['runs'][k]:.2f}"
                           for k in settings)
        lr, schedule = row["default_setting"]
        lines.append(f"| {row['signal']} ({row['kind']}, {row['steps']}) | {cells} | "
                     f"{row['default']:.2f} ({lr:g}, {schedule}) | {best:.2f} ({best_setting[0]:g}, "
                     f"{best_setting[1]}) | {gap:+.2f}{'' if gap >= -GOAL_DB else ' (short)'} |")
    return lines


def _finite(value: float) -> float:
    return value if math.isfinite(value) else -math.inf


def save(rows: list[dict], path: Path) -> None:
    """The sweep's runs and where they come from as JSON (``--render`` reads them)."""
    rows = [{**row, "runs": [[lr, s, v] for (lr, s), v in row["runs"].items()]} for row in rows]
    path.write_text(json.dumps({"provenance": provenance(), "rows": rows}, indent=1) + "\n")


def load(path: Path) -> list[dict]:
    """Rows saved by ``save``, their defaults as ``distlg/defaults.py`` has them now: a run of
    the sweep's setting that equals them (the same run), else the saved run with no settings."""
    from distlg import defaults

    rows = []
    for row in json.loads(path.read_text())["rows"]:
        runs = {(lr, s): v for lr, s, v in row["runs"]}
        d = defaults.for_kind(row["kind"])
        setting = (d.lr, d.schedule)
        if setting in runs:
            row["default"] = runs[setting]
        elif tuple(row["default_setting"]) != setting:
            raise SystemExit(f"{path}: the defaults ({d.lr:g}, {d.schedule}) are not a setting of "
                             "the sweep and not those it ran with; run it again")
        rows.append({**row, "runs": runs, "default_setting": setting})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--signals", nargs="+", default=[], help="signals of benchmarks/fidelity.py")
    parser.add_argument("--lrs", type=float, nargs="+", default=list(LRS))
    parser.add_argument("--schedules", nargs="+", default=list(SCHEDULES), choices=SCHEDULES)
    parser.add_argument("--steps-scale", type=float, default=1.0,
                        help="multiply each signal's steps by this (default 1: fidelity.py's)")
    parser.add_argument("--name", default="sweep", help="results file: results/NAME.md (+ .json)")
    parser.add_argument("--render", action="store_true",
                        help="write results/NAME.md again from results/NAME.json, with the "
                             "defaults distlg has now (no training)")
    args = parser.parse_args()
    started = time.perf_counter()
    runs = RESULTS / f"{args.name}.json"
    if args.render:
        rows = load(runs)
        ran = {setting for row in rows for setting in row["runs"]}  # the sweep's own grid
        args.lrs = sorted({lr for lr, _ in ran})
        args.schedules = [s for s in SCHEDULES if s in {t for _, t in ran}]
        notes = NOTES_RENDERED + "\n\n" + json.loads(runs.read_text())["provenance"]
    else:
        rows = []
        for name in args.signals:
            rows += sweep_signal(name, args.lrs, args.schedules, args.steps_scale)
        save(rows, runs)
        notes = f"Run time {(time.perf_counter() - started) / 60:.1f} minutes."
    write_results(args.name, "Defaults that train: learning rate x schedule",
                  table(rows, args.lrs, args.schedules), notes)


NOTES_RENDERED = ("Rendered with --render from the runs in the .json beside this file; the "
                  "defaults column is the sweep's run of the setting the kind's defaults now "
                  "have. The runs were made by:")


if __name__ == "__main__":
    main()
