"""Checkpoints and the trained model, written by all workers at once, each its own shards.

A worker owns whole shards (``modeldir.shards.owners``), so every shard has one writer: each
worker writes the shards of its partitions (weights and, in a checkpoint, Adam's moments), one
shard at a time; only each partition's checksum crosses to the main worker, which then writes
the global tensors, the checksums and, last, the root document (``modeldir.writer``). A
checkpoint written by N workers resumes on any number of workers: each reads the partitions it
now owns, whichever shards hold them. Checkpoints of format version 1 (one file per partition)
resume too.

An INCODE run's checkpoints also hold its harmonizer (weights and Adam moments), listed in the
manifest's ``training`` section: it resumes from there; exported model directories keep only
the coefficients it computed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from ..data.signal import SignalInfo
from ..geometry import PartitionGrid
from ..modeldir.base import ADAM_STATES
from ..modeldir.format import ModelDir, ModelDirError
from ..modeldir.location import Location
from ..modeldir.runs import STEP_DIR, complete_checkpoints, is_complete, latest, mark_incomplete
from ..modeldir.shards import ShardGrid
from ..modeldir.writer import ShardWriter
from ..nn.model import INR
from .distributed import World

__all__ = ["complete_checkpoints", "latest", "restore", "save", "write_model"]


def write_model(directory: str | Path, model: INR, world: World, grid: PartitionGrid,
                signal_info: SignalInfo, optimizer: torch.optim.Optimizer | None = None,
                training: dict | None = None, world_size: int | None = None) -> Path:
    """Write ``model`` (this worker's shards, and from the main worker the rest) as a model
    directory; with ``optimizer`` it is a checkpoint. Collective: all workers call.
    ``world_size``: lay the shards out as a run of that many workers would (default: this
    one's)."""
    directory = Path(directory)
    if world.is_main:  # an earlier attempt's objects must not be taken for this one's
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True, exist_ok=True)
    world.barrier()
    states = ADAM_STATES if optimizer is not None else ()
    writer = ShardWriter(Location(directory, writable=True), grid, model.arch, signal_info,
                         ShardGrid.for_grid(grid.factors, world_size or world.size), states)
    moments = _adam_moments(model, optimizer)
    local_names = set(model.arch.local_shapes())
    stacks = {name: p for name, p in model.named_tensors() if name in local_names}
    pids, crcs = writer.write(model.partition_ids, stacks,
                              {s: {n: m[s] for n, m in moments.items() if n in local_names} for s in states})
    writer.location.sync_folder()
    gathered = world.all_gather((pids, crcs))
    if world.is_main:
        all_pids = np.concatenate([g[0] for g in gathered])
        all_crcs = np.concatenate([g[1] for g in gathered])
        global_moments = {s: {n: m[s] for n, m in moments.items() if n not in local_names} for s in states}
        harmonizer = None
        if training is not None and optimizer is not None:
            training = {**training, "optimizer_step": _adam_step(model, optimizer)}
            if model.harmonizer is not None:
                harmonizer = _harmonizer_state(model.harmonizer, optimizer)
        writer.finish(all_pids, all_crcs, model.global_state(), global_moments, training, harmonizer)
    world.barrier()
    return directory


def _adam_moments(model: INR, optimizer: torch.optim.Optimizer | None) -> dict[str, dict[str, torch.Tensor]]:
    """Adam's moments of every tensor that has them: {name: {state: tensor}}."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    if optimizer is None:
        return out
    for name, p in model.named_tensors():
        st = optimizer.state.get(p)
        out[name] = {key: st[key] if st else torch.zeros_like(p) for key in ADAM_STATES}
    return out


def _adam_step(model: INR, optimizer: torch.optim.Optimizer) -> int:
    steps = [int(float(optimizer.state[p]["step"])) for p in model.parameters() if optimizer.state.get(p)]
    return steps[0] if steps else 0


def _harmonizer_state(harmonizer: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The harmonizer's weights and their Adam moments (``optim.<state>.<name>``)."""
    tensors = {}
    for name, p in harmonizer.named_parameters():
        tensors[name] = p.detach()
        for key in ADAM_STATES:
            if optimizer.state.get(p):
                tensors[f"optim.{key}.{name}"] = optimizer.state[p][key]
    return tensors


def _restore_harmonizer(ckpt: ModelDir, model: INR, optimizer: torch.optim.Optimizer,
                        step: torch.Tensor | None) -> None:
    harmonizer = model.harmonizer
    if harmonizer is None:
        return
    if "harmonizer" not in (ckpt.training or {}):
        raise ModelDirError(f"{ckpt.path} holds no harmonizer for this INCODE run; start a new "
                            "run (--overwrite)")
    tensors = ckpt.read_harmonizer()
    device = model.coord_scale.device
    with torch.no_grad():
        for name, p in harmonizer.named_parameters():
            p.copy_(tensors[name])
            if step is not None:
                optimizer.state[p] = {"step": step.clone(), **{
                    key: tensors[f"optim.{key}.{name}"].to(device) for key in ADAM_STATES}}


def save(run_dir: str | Path, step: int, model: INR, optimizer: torch.optim.Optimizer,
         world: World, grid: PartitionGrid, signal_info: SignalInfo, config: dict, keep: int = 2) -> Path:
    """Write checkpoint ``step`` under ``run_dir/checkpoints`` and prune all but ``keep``."""
    root = Path(run_dir) / "checkpoints"
    path = write_model(root / f"step-{step:08d}", model, world, grid, signal_info, optimizer,
                       {"step": step, "world_size": world.size, "config": config})
    if world.is_main:
        for old in complete_checkpoints(run_dir)[:-keep]:
            mark_incomplete(old)  # no longer a checkpoint, even if the removal is cut short
            shutil.rmtree(old, ignore_errors=True)
        _sweep(root, path)
    world.barrier()
    return path


def _sweep(root: Path, written: Path) -> None:
    """Remove what killed workers left: checkpoints older than ``written`` that never got their
    root document, and half-written ``.NAME.tmp-PID`` files in ``written``."""
    for old in root.iterdir():
        if STEP_DIR.match(old.name) and old.name < written.name and not is_complete(old):
            shutil.rmtree(old, ignore_errors=True)
    for tmp in written.rglob(".*.tmp-*"):
        tmp.unlink(missing_ok=True)


def restore(path: str | Path, model: INR, optimizer: torch.optim.Optimizer,
            grid: PartitionGrid, signal_info: SignalInfo | None = None) -> dict:
    """Load this worker's partitions, the global branch and their optimiser state from
    checkpoint ``path``; returns the checkpoint's ``training`` section. With ``signal_info``
    the checkpoint must have been trained on that signal (same values' geometry and range, and
    the same source where both say which)."""
    ckpt = ModelDir.open(path)
    training = ckpt.training
    if training is None:
        raise ModelDirError(f"{path} is a model directory, not a checkpoint: nothing to resume")
    if ckpt.arch != model.arch or ckpt.grid != grid:
        raise ModelDirError(f"{path} was written for a different model or partition grid; "
                            "resume with the same settings or start a new run directory")
    if signal_info is not None:
        _check_same_signal(path, ckpt.signal, signal_info)
    pids = model.partition_ids
    device = model.coord_scale.device
    tensors = {**ckpt.read_global(), **(ckpt.read_local(pids) if pids else {})}
    with torch.no_grad():
        model.load_global(tensors)
        for name in model.arch.local_shapes():
            model[name].copy_(tensors[name])
    step = torch.tensor(float(training["optimizer_step"])) if training.get("optimizer_step") else None
    _restore_harmonizer(ckpt, model, optimizer, step)
    if step is None:
        return training  # written before the first optimiser step: no state yet
    moments = {key: {**ckpt.read_global(key), **ckpt.read_local(pids, key)} for key in ADAM_STATES}
    for name, p in model.named_tensors():
        optimizer.state[p] = {"step": step.clone(),
                              **{key: moments[key][name].to(device).clone() for key in ADAM_STATES}}
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
