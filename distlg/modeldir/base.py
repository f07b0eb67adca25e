"""``ModelDir``: what every model directory offers, whatever its format.

A model directory holds a ``Manifest`` (what it encodes), the global tensors, and per partition
present its local tensors (and, in a checkpoint, Adam's moments of both). Readers ask for the
partitions they need, as stacks ``[n, *shape]`` per tensor name, and get them checked against
the directory's checksums. ``ModelDir.open`` picks the format: version 2 (shards,
``distlg.modeldir.sharded``) or version 1 (one file per partition, ``distlg.modeldir.files``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable, ClassVar, Sequence

import numpy as np

from ..nn.architecture import Architecture
from .location import Location

if TYPE_CHECKING:  # torch is imported where tensors are made: `distlg info` needs none
    import torch

    from ..nn.model import INR
from .manifest import Manifest, ModelDirError, id_ranges

ADAM_STATES = ("exp_avg", "exp_avg_sq")


class Layout:
    """How named tensors ``[*shape]`` sit in one flat vector of ``width`` values (C order, in
    the architecture's order): a partition's local tensors, or the global ones."""

    def __init__(self, shapes: dict[str, tuple[int, ...]]):
        self.shapes = {k: tuple(v) for k, v in shapes.items()}
        sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes.values()]
        self.offsets = dict(zip(self.shapes, np.concatenate([[0], np.cumsum(sizes)[:-1]]).tolist()))
        self.width = int(sum(sizes))

    def pack(self, stacks: dict[str, torch.Tensor], rows: torch.Tensor | None = None) -> np.ndarray:
        """[n, width] float32 from stacks [N, *shape] (rows ``rows`` of them, default all)."""
        import torch

        n = len(rows) if rows is not None else len(next(iter(stacks.values()), ()))
        parts = [torch.zeros((n, 0))]
        for name in self.shapes:
            t = stacks[name].detach()
            t = t if rows is None else t.index_select(0, rows.to(t.device))
            parts.append(t.reshape(t.shape[0], -1).to("cpu", torch.float32))
        return torch.cat(parts, dim=1).numpy()

    def pack_one(self, tensors: dict[str, torch.Tensor]) -> np.ndarray:
        """[width] float32 from one set of tensors [*shape] (the global ones; none at all for
        a model without a global branch)."""
        if not self.shapes:
            return np.zeros(0, dtype=np.float32)
        return self.pack({k: v[None] for k, v in tensors.items()})[0]

    def unpack(self, values: np.ndarray) -> dict[str, torch.Tensor]:
        """Stacks [n, *shape] from values [n, width]."""
        import torch

        flat = torch.from_numpy(np.ascontiguousarray(values, dtype=np.float32))
        return {name: flat[:, o:o + int(np.prod(s, dtype=np.int64))].reshape((len(flat),) + s)
                for (name, s), o in zip(self.shapes.items(), self.offsets.values())}

    def to_list(self) -> list:
        return [[name, list(shape)] for name, shape in self.shapes.items()]


def local_layout(arch: Architecture) -> Layout:
    return Layout(arch.local_shapes())


def global_layout(arch: Architecture) -> Layout:
    """The global tensors and the stored constants (INCODE's coefficients)."""
    return Layout({**arch.global_shapes(), **arch.constant_shapes()})


class ModelDir:
    """An opened model directory or checkpoint (see the module docstring)."""

    FORMATS: ClassVar[list[tuple[Callable[[Location], bool], type["ModelDir"]]]] = []
    """(recognises a location, the class that reads it), registered by each format's module."""

    def __init__(self, location: Location, manifest: Manifest):
        self.location, self.manifest = location, manifest

    @classmethod
    def open(cls, spec: str | Path) -> "ModelDir":
        """The model directory or checkpoint at ``spec`` (a path, or an https:// or s3:// URL)."""
        location = Location(spec)
        if location.path is not None and not location.path.is_dir():
            raise ModelDirError(f"{spec} is not a directory")
        for recognises, reader in ModelDir.FORMATS:
            if recognises(location):
                return reader.read(location)
        raise ModelDirError(f"{spec} has no zarr.json or manifest.json: not a model directory, or "
                            "incomplete")

    @classmethod
    def read(cls, location: Location) -> "ModelDir":
        raise NotImplementedError

    # -- what it describes -----------------------------------------------------------------------
    @property
    def path(self) -> Path | str:
        return self.location.path if self.location.path is not None else self.location.spec

    @property
    def grid(self):
        return self.manifest.grid

    @property
    def arch(self) -> Architecture:
        return self.manifest.arch

    @property
    def signal(self):
        return self.manifest.signal

    @property
    def is_checkpoint(self) -> bool:
        return self.manifest.is_checkpoint

    @property
    def training(self) -> dict | None:
        return self.manifest.training

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def present(self) -> np.ndarray:
        """bool [num_partitions]: which partitions the directory holds."""
        raise NotImplementedError

    @property
    def partition_ids(self) -> list[int]:
        return np.flatnonzero(self.present).tolist()

    @property
    def missing(self) -> list[int]:
        return np.flatnonzero(~self.present).tolist()

    def params(self) -> dict[str, int]:
        glob = self.arch.global_params()
        local = int(self.present.sum()) * self.arch.local_params()
        return {"global": glob, "local": local, "total": glob + local}

    def storage(self) -> tuple[int, int]:
        """(objects, bytes) the directory occupies."""
        raise NotImplementedError

    # -- reading ---------------------------------------------------------------------------------
    def read_global(self, state: str | None = None) -> dict[str, torch.Tensor]:
        """The global tensors (and constants); with ``state`` ("exp_avg", "exp_avg_sq") their
        Adam moments (checkpoints)."""
        raise NotImplementedError

    def read_local(self, pids: Sequence[int], state: str | None = None) -> dict[str, torch.Tensor]:
        """Stacks [len(pids), *shape] of the local tensors of ``pids`` (or their Adam moments),
        each partition checked against the directory's checksums."""
        raise NotImplementedError

    def read_harmonizer(self) -> dict[str, torch.Tensor]:
        """An INCODE checkpoint's harmonizer (weights and ``optim.<state>.<name>`` moments)."""
        raise NotImplementedError

    def verify(self, pids: Sequence[int] | None = None) -> None:
        """Read and check every object that holds ``pids`` (default: all present) and the
        global tensors, without keeping them: what an edit checks before it writes."""
        raise NotImplementedError

    def check_held(self, pids: Sequence[int]) -> list[int]:
        """``pids`` as ints, after checking that the directory holds every one."""
        ids = np.asarray(list(pids) if not isinstance(pids, np.ndarray) else pids, dtype=np.int64)
        present = self.present
        inside = (ids >= 0) & (ids < len(present))
        ok = inside.copy()
        ok[inside] = present[ids[inside]]
        if not ok.all():
            raise ModelDirError(f"{self.path}: partitions {id_ranges(ids[~ok].tolist())} are not in "
                                "this model (cropped away or never trained)")
        return ids.tolist()

    def load(self, pids: Sequence[int] | None = None, device: str | "torch.device" = "cpu",
             global_tensors: dict[str, "torch.Tensor"] | None = None) -> "INR":
        """An ``INR`` holding ``pids`` (default: all present), reading only what holds them.
        ``global_tensors`` (from ``read_global``) saves re-reading them when a caller loads many
        partition subsets in turn."""
        import torch

        from ..nn.model import INR

        pids = self.partition_ids if pids is None else self.check_held(pids)
        model = INR(self.arch, pids, init=False)
        model.load_global(global_tensors if global_tensors is not None else self.read_global())
        if pids:
            with torch.no_grad():
                for name, stack in self.read_local(pids).items():
                    model[name].copy_(stack)
        return model.to(device)
