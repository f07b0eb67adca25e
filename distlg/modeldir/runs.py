"""A run directory's checkpoints: ``checkpoints/step-NNNNNNNN``, complete once their manifest
is written. What the trainer resumes from and ``distlg export`` exports."""

from __future__ import annotations

import re
from pathlib import Path

from .format import MANIFEST

STEP_DIR = re.compile(r"^step-(\d{8})$")
"""The name of one checkpoint's directory."""


def complete_checkpoints(run_dir: str | Path) -> list[Path]:
    """Checkpoint directories that have a manifest, oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_DIR.match(p.name) and (p / MANIFEST).is_file()]
    return sorted(found, key=lambda p: p.name)


def latest(run_dir: str | Path) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None
