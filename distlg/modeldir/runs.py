"""A run directory's checkpoints: ``checkpoints/step-NNNNNNNN``, complete once their root
document is written (``zarr.json``; ``manifest.json`` for format version 1). What the trainer
resumes from and ``distlg export`` exports."""

from __future__ import annotations

import re
from pathlib import Path

STEP_DIR = re.compile(r"^step-(\d{8})$")
"""The name of one checkpoint's directory."""
ROOTS = ("zarr.json", "manifest.json")
"""The document written last into a model directory of either format."""


def is_complete(path: Path) -> bool:
    return any((path / name).is_file() for name in ROOTS)


def mark_incomplete(path: Path) -> None:
    """Remove the root document first, so a directory being deleted never looks complete."""
    for name in ROOTS:
        (path / name).unlink(missing_ok=True)


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint directories that have their root document, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    return sorted((p for p in root.iterdir() if STEP_DIR.match(p.name) and is_complete(p)),
                  key=lambda p: p.name)


def latest(run_dir: str | Path) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None
