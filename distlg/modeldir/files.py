"""Model directories of format version 1: a manifest, the global file, one file per partition.

    model/
      manifest.json            format, version, signal geometry, grid, architecture, and for
                               every partition its id, index, file name, sha256 and parameter count
      global.safetensors       global branch and merge (replicated tensors)
      part-000123.safetensors  one local sub-network each

Checkpoints keep the optimiser's state beside the weights (tensors ``optim.<state>.<tensor>``)
and a ``training`` section in the manifest. Every file is written under a temporary name and
renamed into place; the manifest is written last. Only JSON and safetensors are read, file
names must be plain names inside the directory, a file whose sha256 differs from the manifest's
is refused, and a partition file must say it holds the partition the manifest lists it for.
Version 2 (``sharded``) is what distlg writes; this format stays readable, and
``distlg export --format safetensors`` still writes it for people who want one file per
partition.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from ..data.signal import SignalInfo
from ..geometry import PartitionGrid
from ..nn.architecture import Architecture
from .base import ModelDir
from .location import Location
from .manifest import FORMAT, Manifest, ModelDirError, id_ranges

if TYPE_CHECKING:  # torch and safetensors are imported where tensors are read or written
    import torch

VERSION = 1
MANIFEST = "manifest.json"
GLOBAL_FILE = "global.safetensors"
OPTIM_PREFIX = "optim."
_PLAIN = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")


def partition_file(pid: int) -> str:
    return f"part-{pid:06d}.safetensors"


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_tensors(directory: Path, name: str, tensors: dict[str, torch.Tensor],
                  metadata: dict[str, str] | None = None) -> dict:
    """Write one safetensors file; return its manifest entry (file, sha256, params)."""
    from safetensors.torch import save as st_save

    data = _sorted_metadata(st_save({k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                                    metadata={"format": FORMAT, **(metadata or {})}))
    atomic_write(directory / name, data)
    params = sum(v.numel() for k, v in tensors.items() if not k.startswith(OPTIM_PREFIX))
    return {"file": name, "sha256": hashlib.sha256(data).hexdigest(), "params": params}


def _sorted_metadata(data: bytes) -> bytes:
    """``data`` with its header's metadata keys in sorted order: safetensors writes them in a
    per-process hash order, so the same weights would get different bytes (and sha256) from
    one run to the next. The header keeps its length (same keys and values, compact JSON), so
    the padding and the tensors' offsets stay as they are."""
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    if "__metadata__" not in header:
        return data
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    if len(text) > n:  # never: same content, same compact encoding
        return data
    return data[:8] + text + b" " * (n - len(text)) + data[8 + n:]


def write_manifest(directory: Path, manifest: dict) -> None:
    atomic_write(directory / MANIFEST, (json.dumps(manifest, indent=1) + "\n").encode())


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not _PLAIN.match(name) or name in (".", ".."):
        raise ModelDirError(f"unsafe file name in manifest: {name!r} (must be a plain name "
                            "inside the model directory)")
    return name



def _is_files(location: Location) -> bool:
    return location.path is not None and (location.path / MANIFEST).is_file()


class FileModel(ModelDir):
    """A version-1 model directory or checkpoint (local folders only)."""

    def __init__(self, location: Location, manifest: Manifest):
        super().__init__(location, manifest)
        self.entries = {int(e["id"]): e for e in manifest.raw["partitions"]}

    @classmethod
    def read(cls, location: Location) -> "FileModel":
        path = location.path
        mpath = path / MANIFEST
        try:
            doc = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelDirError(f"{mpath} is not valid JSON: {exc}") from None
        manifest = Manifest.parse(doc, str(mpath))
        if manifest.version != VERSION:
            raise ModelDirError(f"{mpath} has format version {manifest.version}; a manifest.json "
                                f"model is version {VERSION}")
        try:
            _check_name(doc["global"]["file"])
            for entry in doc["partitions"]:
                _check_name(entry["file"])
            _check_ids([int(e["id"]) for e in doc["partitions"]], manifest.grid, mpath)
            _check_files(doc, manifest.arch, path, mpath)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ModelDirError):
                raise
            raise ModelDirError(f"{mpath} is malformed: {exc!r}") from None
        return cls(location, manifest)

    @property
    def present(self) -> np.ndarray:
        mask = np.zeros(self.grid.num_partitions, dtype=bool)
        mask[list(self.entries)] = True
        return mask

    def storage(self) -> tuple[int, int]:
        files = [p for p in self.location.path.iterdir() if p.is_file()]
        return len(files), sum(p.stat().st_size for p in files)

    # -- reading -------------------------------------------------------------------------------
    def file(self, entry: dict) -> Path:
        """The path of one manifest entry's file, after checking that its name is plain, that
        it exists and that it is no link leading outside the directory."""
        name = _check_name(entry["file"])
        path = self.location.path / name
        if not path.is_file():
            raise ModelDirError(f"{self.path}: file {name} listed in the manifest is missing")
        if path.resolve().parent != self.location.path.resolve():
            raise ModelDirError(f"{path} is a link leading outside the model directory; refusing it")
        return path

    def _check_sha256(self, path: Path, digest: str, entry: dict) -> None:
        if digest != entry["sha256"]:
            raise ModelDirError(f"{path}: sha256 differs from the manifest; the file was changed "
                                "or damaged, refusing to load it")

    def read_entry(self, entry: dict, pid: int | None = None) -> dict[str, torch.Tensor]:
        """The tensors of one manifest entry, after checking the file's sha256 (and, for a
        partition's file, that it holds partition ``pid``)."""
        from safetensors.torch import load as st_load

        path = self.file(entry)
        data = path.read_bytes()
        self._check_sha256(path, hashlib.sha256(data).hexdigest(), entry)
        try:
            tensors = st_load(data)
        except Exception as exc:  # safetensors raises its own error types
            raise ModelDirError(f"{path} is not a valid safetensors file: {exc}") from None
        if pid is not None:
            n = int.from_bytes(data[:8], "little")
            said = json.loads(data[8:8 + n]).get("__metadata__", {}).get("partition")
            if said is not None and said != str(pid):
                raise ModelDirError(f"{path} holds partition {said}, not {pid} as the manifest "
                                    "says (a file copied over another)")
        return tensors

    def read_global(self, state: str | None = None) -> dict[str, torch.Tensor]:
        tensors = self.read_entry(self.manifest.raw["global"])
        return _select(tensors, state)

    def read_local(self, pids: Sequence[int], state: str | None = None) -> dict[str, torch.Tensor]:
        import torch

        pids = self.check_held(pids)
        shapes = self.arch.local_shapes()
        out = {name: torch.empty((len(pids),) + shape) for name, shape in shapes.items()}
        for row, pid in enumerate(pids):
            tensors = _select(self.read_entry(self.entries[pid], pid), state)
            for name, shape in shapes.items():
                t = tensors.get(name)
                if t is None or tuple(t.shape) != shape:
                    raise ModelDirError(f"{self.path}: partition {pid}'s tensor {name} is missing "
                                        f"or not {shape}")
                out[name][row] = t
        return out

    def read_harmonizer(self) -> dict[str, torch.Tensor]:
        section = (self.training or {}).get("harmonizer")
        if not section:
            raise ModelDirError(f"{self.path} holds no harmonizer")
        return self.read_entry(section)

    def verify(self, pids: Sequence[int] | None = None) -> None:
        """Check the files of ``pids`` (default: all) and the global file as reading does
        (plain names, no links outside, sha256), without loading them."""
        entries = [self.manifest.raw["global"]]
        entries += [self.entries[p] for p in (self.entries if pids is None else pids)]
        for entry in entries:
            path = self.file(entry)
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 24):
                    digest.update(chunk)
            self._check_sha256(path, digest.hexdigest(), entry)


ModelDir.FORMATS.append((_is_files, FileModel))


def _select(tensors: dict[str, torch.Tensor], state: str | None) -> dict[str, torch.Tensor]:
    """The weights of a file's tensors, or their Adam moment ``state``."""
    if state is None:
        return {k: v for k, v in tensors.items() if not k.startswith(OPTIM_PREFIX)}
    prefix = f"{OPTIM_PREFIX}{state}."
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def manifest_for(grid: PartitionGrid, arch: Architecture, signal: SignalInfo, global_entry: dict,
                 partition_entries: Sequence[dict], training: dict | None = None) -> dict:
    """A complete manifest; ``partition_entries`` carry id, file, sha256 and params."""
    parts = sorted(partition_entries, key=lambda e: e["id"])
    for e in parts:
        e["index"] = list(grid.index(e["id"]))
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "signal": signal.to_dict(),
        "grid": {"factors": list(grid.factors), "overlaps": list(grid.overlaps),
                 "padding": list(grid.padding), "part_shape": list(grid.part_shape),
                 "extent": list(grid.extent)},
        "architecture": arch.to_dict(),
        "params": {"global": global_entry["params"], "local": sum(e["params"] for e in parts),
                   "per_partition": arch.local_params()},
        "global": global_entry,
        "partitions": parts,
    }
    if training is not None:
        manifest["training"] = training
    return manifest



def _check_files(manifest: dict, arch: Architecture, path: Path, mpath: Path) -> None:
    """Per file a sha256 and a parameter count that the architecture implies and the file's
    size can hold (so widths are bounded by what is on disk)."""
    entries = [(manifest["global"], arch.global_params())]
    entries += [(e, arch.local_params()) for e in manifest["partitions"]]
    needed = held = 0
    for entry, params in entries:
        sha = entry["sha256"]
        if not isinstance(sha, str) or not re.fullmatch(r"[0-9a-f]{64}", sha):
            raise ModelDirError(f"{mpath}: {entry['file']} has no valid sha256")
        if entry["params"] != params or isinstance(entry["params"], bool):
            raise ModelDirError(f"{mpath}: {entry['file']} lists {entry['params']!r} parameters, "
                                f"the architecture {params:,}")
        file = path / entry["file"]
        if file.is_file():
            needed, held = needed + 2 * params, held + file.stat().st_size
    if held < needed:  # at least 2 bytes a weight: the widths cannot outgrow what is on disk
        raise ModelDirError(f"{mpath}: the architecture needs {needed // 2:,} parameters, more "
                            f"than its files' {held:,} bytes can hold")


def _check_ids(ids: list[int], grid: PartitionGrid, mpath: Path) -> None:
    bad = [p for p in ids if not 0 <= p < grid.num_partitions]
    if bad:
        raise ModelDirError(f"{mpath} lists partitions {id_ranges(bad)} outside the grid of "
                            f"{grid.num_partitions}")
    if len(set(ids)) != len(ids):
        raise ModelDirError(f"{mpath} lists a partition more than once")


def write_files_model(directory: Path, grid: PartitionGrid, arch: Architecture, signal,
                      global_tensors: dict[str, torch.Tensor],
                      partitions: Iterable[tuple[int, dict[str, torch.Tensor]]]) -> None:
    """A version-1 model directory in ``directory``: one file per partition, the manifest last."""
    entries = [{"id": pid, **write_tensors(directory, partition_file(pid), tensors,
                                           {"partition": str(pid)})} for pid, tensors in partitions]
    global_entry = write_tensors(directory, GLOBAL_FILE, global_tensors)
    write_manifest(directory, manifest_for(grid, arch, signal, global_entry, entries))
