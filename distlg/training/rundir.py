"""A run directory (``--out``): claimed before training, replaced only where distlg wrote it.

``claim`` checks ``--out`` against ``--resume`` / ``--overwrite`` and the run's inputs and
returns what ``--overwrite`` will delete; nothing is deleted there. The trainer deletes it
(``replace``) only once the signal is open, the plan made and every setting checked, so a
refused command leaves the old run as it was. Only what distlg writes is ever deleted:
checkpoint folders ``checkpoints/step-NNNNNNNN`` and the model folder (each holding only a model
directory's files), ``history.jsonl`` and TensorBoard's event files; a run directory holding
anything else there is refused before anything is touched.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

from ..config import Config, ConfigError
from ..modeldir.runs import STEP_DIR
from ..outputs import check_apart, refuse_url

RUN_ENTRIES = ("checkpoints", "model", "history.jsonl", "tensorboard")
"""What a run writes into its --out (``--overwrite`` deletes them)."""
_MODEL_FILE = re.compile(r"\A(manifest\.json|zarr\.json|[A-Za-z0-9_.-]+\.safetensors|\..+\.tmp-\d+)\Z")
"""Files of a model directory or checkpoint (format 1: manifest and safetensors files; format
2: Zarr documents, and chunks under ``c/``), and the temporary names they are written under."""
_EVENTS = re.compile(r"\A(events\.out\.tfevents\..+|hparams\.yml)\Z")
"""What TensorBoard's writer (through accelerate) puts under ``tensorboard/``."""


def claim(config: Config) -> list[Path]:
    """Refuse an --out that is a URL, a file, inside the run's inputs or a distlg folder, or
    that holds a run unless --resume continues it or --overwrite replaces it; with --overwrite
    return the entries to delete (every one of them distlg's, else refused), else []."""
    out, run = Path(config.run.out), config.run
    refuse_url(config.run.out, "--out")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; give a run directory")
    if run.resume and run.overwrite:
        raise ConfigError("--resume continues the run in --out, --overwrite replaces it: give one")
    check_apart(out, {"signal": config.signal.path, "pack": config.signal.pack}, "--out",
                itself=True)
    held = [out / name for name in RUN_ENTRIES if (out / name).exists() or (out / name).is_symlink()]
    if run.resume and not held:
        print(f"distlg train: warning: --resume, but {out} holds no run yet (a new run "
              "directory; check the path if you meant to continue one): starting from step 0",
              file=sys.stderr)
    if not held or run.resume:
        return []
    if not run.overwrite:
        raise ConfigError(f"{out} holds a run already ({held[0].name}); pass --resume to continue "
                          "it or --overwrite to replace it")
    for path in held:
        foreign = _foreign(path)
        if foreign is not None:
            raise ConfigError(f"{out} holds files distlg did not write ({foreign.relative_to(out)}); "
                              "--overwrite "
                              "deletes only a run's own files: move them, or choose another --out")
    return held


def _foreign(entry: Path) -> Path | None:
    """The first file or folder under the run entry ``entry`` that distlg would not have
    written there, or None."""
    if entry.is_symlink() or (entry.name == "history.jsonl") != entry.is_file():
        return entry
    if entry.name == "checkpoints":
        for step in sorted(entry.iterdir()):
            if not (STEP_DIR.match(step.name) and step.is_dir() and not step.is_symlink()):
                return step
            if (found := _foreign_model(step)) is not None:
                return found
    elif entry.name == "model":
        return _foreign_model(entry)
    elif entry.name == "tensorboard":
        for path in sorted(entry.rglob("*")):
            if path.is_symlink() or (not path.is_dir() and not _EVENTS.match(path.name)):
                return path
    return None


def _foreign_model(folder: Path) -> Path | None:
    """The first file under ``folder`` that a model directory or checkpoint does not hold."""
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            return path
        if path.is_dir() or _MODEL_FILE.match(path.name):
            continue
        parts = path.relative_to(folder).parts
        chunk = "c" in parts[:-1] and all(p.isdigit() for p in parts[parts.index("c") + 1:])
        if not chunk:
            return path
    return None


def replace(entries: list[Path]) -> None:
    """Delete a replaced run's entries (what ``claim`` returned)."""
    for path in entries:
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
