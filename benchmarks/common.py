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
