"""What every benchmark shares: writing its results with the command, commit, date, machine
and load; an older revision's package imported beside today's, to time both in one run."""

from __future__ import annotations

import datetime
import importlib
import os
import platform
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
LOAD_AT_START = os.getloadavg()[0]
"""The machine's 1-minute load average when the benchmark started (other jobs included)."""


def provenance() -> str:
    """Command, commit, date and machine, for the header of a results file."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, text=True,
                                capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":!benchmarks/results"], cwd=root,
                               text=True, capture_output=True).stdout.strip()
        commit += " (with uncommitted changes)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    import torch

    command = "python " + " ".join([os.path.relpath(sys.argv[0], root), *sys.argv[1:]])
    return (f"- command: `{command}`\n- commit: {commit}\n"
            f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}\n"
            f"- machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}\n"
            f"- load: 1-minute load average {LOAD_AT_START:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end (other jobs included)\n")


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


def package_at(rev: str):
    """The ``distlg`` package as it was at git revision ``rev``, imported as ``distlg_<rev>``
    from a temporary copy (its imports are relative, so it runs beside today's)."""
    root = Path(__file__).resolve().parents[1]
    name = "distlg_" + rev.replace("^", "p").replace("~", "t")
    if name in sys.modules:
        return sys.modules[name]
    where = Path(tempfile.mkdtemp(prefix="distlg-bench-"))
    archive = subprocess.run(["git", "archive", "--format=tar", rev, "distlg"], cwd=root,
                             capture_output=True, check=True).stdout
    archive_path = where / "src.tar"
    archive_path.write_bytes(archive)
    with tarfile.open(archive_path) as tar:
        tar.extractall(where, filter="data")
    (where / "distlg").rename(where / name)
    sys.path.insert(0, str(where))
    return importlib.import_module(name)


def old_model_modules(rev: str):
    """(model module, fused module) of the package at ``rev``, in either layout it had:
    ``nn/model.py`` and ``nn/fused.py``, or both at the top level."""
    old = package_at(rev)
    for prefix in (".nn", ""):
        try:
            return (importlib.import_module(f"{old.__name__}{prefix}.model"),
                    importlib.import_module(f"{old.__name__}{prefix}.fused"))
        except ModuleNotFoundError:
            continue
    raise ModuleNotFoundError(f"no model and fused modules in distlg at {rev}")


def run_config(signal=None, **settings):
    """Train in this process with ``Config().replace(**settings)`` (no TensorBoard, no progress
    bar, run directory under storage/bench, replaced if it holds an earlier run); returns the
    ``TrainResult``."""
    from distlg.config import Config
    from distlg.training.trainer import train

    settings.setdefault("out", str(Path(__file__).resolve().parents[1] / "storage" / "bench" / "run"))
    settings.setdefault("overwrite", True)
    config = Config().replace(tensorboard=False, progress=False, **settings)
    return train(config, signal=signal)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training(runs: dict, name: str, title: str, clock: str = "time") -> str:
    """PSNR against step and against training time for each run (its evaluations; ``clock``
    "time": wall time, "cpu": the process's CPU time); saved as ``results/<name>.png``;
    returns the file name for a Markdown link."""
    plt = _pyplot()
    fig, (by_step, by_time) = plt.subplots(1, 2, figsize=(11, 4))
    for label, result in runs.items():
        evals = [h for h in result.history if "psnr" in h]
        by_step.plot([h["step"] for h in evals], [h["psnr"] for h in evals], label=label)
        by_time.plot([h[clock] for h in evals], [h["psnr"] for h in evals], label=label)
    by_step.set(xlabel="step", ylabel="PSNR (dB)")
    by_time.set(xlabel="training time (s" + (", CPU" if clock == "cpu" else "") + ")",
                ylabel="PSNR (dB)")
    for ax in (by_step, by_time):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / f"{name}.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f"{name}.png"


def plot_images(images: dict, name: str) -> str:
    """A row of images (arrays [H, W, C] or [H, W] with values in [-1, 1]) with their labels as
    titles, saved as ``results/<name>.png``; returns the file name."""
    import numpy as np

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(images), figsize=(3.2 * len(images), 3.5))
    for ax, (label, image) in zip(np.atleast_1d(axes), images.items()):
        image = np.clip((np.asarray(image, dtype=np.float32) + 1) / 2, 0, 1)
        ax.imshow(image[..., 0] if image.ndim == 3 and image.shape[-1] == 1 else image,
                  cmap="gray", vmin=0, vmax=1)
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    RESULTS.mkdir(parents=True, exist_ok=True)
    fig.savefig(RESULTS / f"{name}.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f"{name}.png"
