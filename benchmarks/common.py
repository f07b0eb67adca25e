"""What every benchmark shares: writing its results with the command, commit and date."""

from __future__ import annotations

import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def provenance() -> str:
    """Command, commit, date and machine, for the header of a results file."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                                capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               text=True, capture_output=True).stdout.strip()
        commit += " (with uncommitted changes)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    import torch

    command = "python " + " ".join([os.path.relpath(sys.argv[0], root), *sys.argv[1:]])
    return (f"- command: `{command}`\n- commit: {commit}\n"
            f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}\n"
            f"- machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}\n")


def write_results(name: str, title: str, lines: list[str], notes: str = "") -> Path:
    """Write ``results/<name>.md``: title, provenance, the table lines and notes."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.md"
    body = f"# {title}\n\n{provenance()}\n" + "\n".join(lines) + "\n"
    if notes:
        body += "\n" + notes.strip() + "\n"
    path.write_text(body)
    print(f"wrote {path}")
    return path


def run_config(signal=None, **settings):
    """Train in this process with ``Config().replace(**settings)`` (no TensorBoard, no progress
    bar, run directory under storage/bench); returns the ``TrainResult``."""
    from distlg.config import Config
    from distlg.train import train

    settings.setdefault("out", str(Path(__file__).resolve().parents[1] / "storage" / "bench" / "run"))
    config = Config().replace(tensorboard=False, progress=False, **settings)
    return train(config, signal=signal)
