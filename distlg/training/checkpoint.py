"""Checkpoints and the exported model, written by all workers at once, one file per partition.

Every worker writes the files of its own partitions (weights and, in a checkpoint, their slices
of the optimiser's state); the main worker then writes the global branch and the manifest,
which comes last. Nothing but per-file metadata (name, sha256, size) crosses workers. Because
files are per partition, a checkpoint written by N workers resumes on any number of workers:
each simply reads the files of the partitions it now owns.

An INCODE run's checkpoints also hold its harmonizer (weights and Adam moments) in
``harmonizer.safetensors``, listed in the manifest's ``training`` section: it resumes from
there; exported model directories keep only the coefficients it computed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from ..data.signal import SignalInfo
from ..geometry import PartitionGrid
from ..modeldir.format import (
    GLOBAL_FILE,
    MANIFEST,
    OPTIM_PREFIX,
    ModelDir,
    ModelDirError,
    manifest_for,
    partition_file,
    write_manifest,
    write_tensors,
)
from ..modeldir.runs import STEP_DIR, complete_checkpoints, latest
from ..nn.model import INR
from .distributed import World

__all__ = ["complete_checkpoints", "latest", "restore", "save", "write_model"]

ADAM_STATES = ("exp_avg", "exp_avg_sq")
HARMONIZER_FILE = "harmonizer.safetensors"


def write_model(directory: str | Path, model: INR, world: World, grid: PartitionGrid,
                signal_info: SignalInfo, optimizer: torch.optim.Optimizer | None = None,
                training: dict | None = None) -> Path:
    """Write ``model`` (this worker's partitions, and the global branch from the main worker)
    as a model directory; with ``optimizer`` it is a checkpoint. Collective: all workers call."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if world.is_main:  # a stale manifest from an earlier attempt must not describe new files
        (directory / MANIFEST).unlink(missing_ok=True)
    world.barrier()
    state = _adam_state(model, optimizer)
    entries = []
    for pid in model.partition_ids:
        s = model.slot(pid)
        tensors = dict(model.local_state(pid))
        for name, tensor in state["local"].items():
            tensors[name] = tensor[s]
        entries.append({"id": pid, **write_tensors(directory, partition_file(pid), tensors,
                                                   {"partition": str(pid)})})
    gathered = [e for part in world.all_gather(entries) for e in part]
    if world.is_main:
        tensors = {**model.global_state(), **state["global"]}
        global_entry = write_tensors(directory, GLOBAL_FILE, tensors)
        if training is not None and optimizer is not None:
            training = {**training, "optimizer_step": state["step"]}
            if model.harmonizer is not None:
                training["harmonizer"] = write_tensors(
                    directory, HARMONIZER_FILE, _harmonizer_state(model.harmonizer, optimizer))
        write_manifest(directory, manifest_for(grid, model.arch, signal_info, global_entry,
                                               gathered, training))
    world.barrier()
    return directory


def _adam_state(model: INR, optimizer: torch.optim.Optimizer | None) -> dict:
    out: dict = {"local": {}, "global": {}, "step": 0}
    if optimizer is None:
        return out
    local_names = set(model.arch.local_shapes())
    for name, p in model.named_tensors():
        st = optimizer.state.get(p)
        if not st:
            continue
        out["step"] = int(float(st["step"]))
        part = "local" if name in local_names else "global"
        for key in ADAM_STATES:
            out[part][f"{OPTIM_PREFIX}{key}.{name}"] = st[key]
    return out


def _harmonizer_state(harmonizer: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The harmonizer's weights and their Adam moments (``optim.<state>.<name>``)."""
    tensors = {}
    for name, p in harmonizer.named_parameters():
        tensors[name] = p.detach()
        for key in ADAM_STATES:
            if optimizer.state.get(p):
                tensors[f"{OPTIM_PREFIX}{key}.{name}"] = optimizer.state[p][key]
    return tensors


def _restore_harmonizer(ckpt: ModelDir, model: INR, optimizer: torch.optim.Optimizer,
                        training: dict, step: torch.Tensor | None) -> None:
    harmonizer = model.harmonizer
    if harmonizer is None:
        return
    if "harmonizer" not in training:
        raise ModelDirError(f"{ckpt.path} holds no harmonizer for this INCODE run; start a new "
                            "run (--overwrite)")
    tensors = ckpt.read(training["harmonizer"])
    device = model.coord_scale.device
    with torch.no_grad():
        for name, p in harmonizer.named_parameters():
            p.copy_(tensors[name])
            if step is not None:
                optimizer.state[p] = {"step": step.clone(), **{
                    key: tensors[f"{OPTIM_PREFIX}{key}.{name}"].to(device) for key in ADAM_STATES}}


def save(run_dir: str | Path, step: int, model: INR, optimizer: torch.optim.Optimizer,
         world: World, grid: PartitionGrid, signal_info: SignalInfo, config: dict, keep: int = 2) -> Path:
    """Write checkpoint ``step`` under ``run_dir/checkpoints`` and prune all but ``keep``."""
    root = Path(run_dir) / "checkpoints"
    path = write_model(root / f"step-{step:08d}", model, world, grid, signal_info, optimizer,
                       {"step": step, "world_size": world.size, "config": config})
    if world.is_main:
        for old in complete_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        _sweep(root, path)
    world.barrier()
    return path


def _sweep(root: Path, written: Path) -> None:
    """Remove what killed workers left: checkpoints older than ``written`` that never got their
    manifest, and half-written ``.NAME.tmp-PID`` files in ``written``."""
    for old in root.iterdir():
        if STEP_DIR.match(old.name) and old.name < written.name and not (old / MANIFEST).is_file():
            shutil.rmtree(old, ignore_errors=True)
    for tmp in written.glob(".*.tmp-*"):
        tmp.unlink(missing_ok=True)


def restore(path: str | Path, model: INR, optimizer: torch.optim.Optimizer,
            grid: PartitionGrid, signal_info: SignalInfo | None = None) -> dict:
    """Load this worker's partitions, the global branch and their optimiser state from
    checkpoint ``path``; returns the checkpoint's ``training`` section. With ``signal_info``
    the checkpoint must have been trained on that signal (same values' geometry and range, and
    the same source where both say which)."""
    ckpt = ModelDir.open(path)
    training = ckpt.manifest.get("training")
    if training is None:
        raise ModelDirError(f"{path} is a model directory, not a checkpoint: nothing to resume")
    if ckpt.arch != model.arch or ckpt.grid != grid:
        raise ModelDirError(f"{path} was written for a different model or partition grid; "
                            "resume with the same settings or start a new run directory")
    if signal_info is not None:
        _check_same_signal(path, ckpt.signal, signal_info)
    loaded, extra = ckpt.load(model.partition_ids, device=model.coord_scale.device, optimizer=True)
    with torch.no_grad():
        for (_, p), (_, q) in zip(model.named_tensors(), loaded.named_tensors()):
            p.copy_(q)
    step = torch.tensor(float(training["optimizer_step"])) if training.get("optimizer_step") else None
    _restore_harmonizer(ckpt, model, optimizer, training, step)
    if step is None:
        return training  # written before the first optimiser step: no state yet
    local_names = set(model.arch.local_shapes())
    for name, p in model.named_tensors():
        state = {"step": step.clone()}
        for key in ADAM_STATES:
            if name in local_names:
                state[key] = torch.stack([extra[f"{OPTIM_PREFIX}{key}.{name}@{pid}"]
                                          for pid in model.partition_ids]).to(p.device)
            else:
                state[key] = extra[f"{OPTIM_PREFIX}{key}.{name}"].to(p.device)
        optimizer.state[p] = state
    return training



def _identity(info: SignalInfo) -> str | None:
    """What names the signal's content: a store's source fingerprint or a built-in's name."""
    return info.fingerprint or info.source


def _check_same_signal(path: str | Path, trained: SignalInfo, now: SignalInfo) -> None:
    was, this = _identity(trained), _identity(now)
    if trained != now or (was is not None and this is not None and was != this):
        source = trained.store or trained.source or "another signal"
        raise ModelDirError(f"{path} was trained on another signal ({source}, fingerprint {was}; "
                            f"this one is {now.store or now.source}, "
                            f"fingerprint {this}); resume with the signal it was trained on, or "
                            "start a new run (--overwrite)")
