"""The model directory: a manifest, the global branch, and one safetensors file per partition.

    model/
      manifest.json          format, version, signal geometry, grid, architecture, and for every
                             partition its id, index, file name, sha256 and parameter count
      global.safetensors     global branch and merge (replicated tensors)
      part-000123.safetensors  one local sub-network each

Checkpoints use the same layout with the optimiser's state stored beside the weights (tensors
named ``optim.<state>.<tensor>``) and a ``training`` section in the manifest. Every file is
written under a temporary name and renamed into place; the manifest is written last, so a
directory without one is incomplete. Only JSON and safetensors are ever read, file names in a
manifest must be plain names of files inside the directory, and a file whose sha256 differs from
the manifest is refused. storage/README.md documents the format; ``crop``, ``extend`` and
``export`` (beside this module) edit it, ``distlg.rendering`` reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..data.signal import AXES, SignalInfo
from ..errors import DistlgError
from ..geometry import PartitionGrid
from ..nn.model import INR, Architecture
from ..staging import staged

FORMAT = "distlg-model"
VERSION = 1
MANIFEST = "manifest.json"
GLOBAL_FILE = "global.safetensors"
OPTIM_PREFIX = "optim."
_PLAIN = re.compile(r"\A[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")


class ModelDirError(DistlgError):
    """A model directory that is missing, incomplete, tampered with or unsafe."""


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


@dataclass
class ModelDir:
    """An opened (manifest-validated) model directory or checkpoint."""

    path: Path
    manifest: dict

    @classmethod
    def open(cls, path: str | Path) -> "ModelDir":
        path = Path(path)
        mpath = path / MANIFEST
        if not path.is_dir():
            raise ModelDirError(f"{path} is not a directory")
        if not mpath.is_file():
            raise ModelDirError(f"{path} has no {MANIFEST}: not a model directory, or incomplete")
        try:
            manifest = json.loads(mpath.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ModelDirError(f"{mpath} is not valid JSON: {exc}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ModelDirError(f"{mpath} is not a distlg manifest")
        if manifest.get("version") != VERSION:
            raise ModelDirError(f"{mpath} has format version {manifest.get('version')!r}; this "
                                f"distlg reads version {VERSION}")
        try:
            _check_name(manifest["global"]["file"])
            for entry in manifest["partitions"]:
                _check_name(entry["file"])
            grid, arch = cls._parse(manifest)
            _check_ids([int(e["id"]) for e in manifest["partitions"]], grid, mpath)
            _check_schema(manifest, grid, arch, path, mpath)
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ModelDirError):
                raise
            raise ModelDirError(f"{mpath} is malformed: {exc!r}") from None
        return cls(path, manifest)

    @staticmethod
    def _parse(manifest: dict) -> tuple[PartitionGrid, Architecture]:
        g = manifest["grid"]
        grid = PartitionGrid(tuple(manifest["signal"]["shape"]), tuple(g["factors"]),
                             tuple(g["overlaps"]), tuple(g.get("extent", ())))
        return grid, Architecture.from_dict(manifest["architecture"])

    # -- what it describes ---------------------------------------------------------------------
    @property
    def grid(self) -> PartitionGrid:
        return self._parse(self.manifest)[0]

    @property
    def arch(self) -> Architecture:
        return self._parse(self.manifest)[1]

    @property
    def signal(self) -> SignalInfo:
        """What the model encodes: kind, shape, channels, dtype, value range (its values map
        back to the signal's units through ``denormalise``)."""
        return SignalInfo.from_dict(self.manifest["signal"])

    @property
    def is_checkpoint(self) -> bool:
        return "training" in self.manifest

    @property
    def entries(self) -> dict[int, dict]:
        return {int(e["id"]): e for e in self.manifest["partitions"]}

    @property
    def partition_ids(self) -> list[int]:
        return sorted(self.entries)

    @property
    def missing(self) -> list[int]:
        present = set(self.entries)
        return [p for p in range(self.grid.num_partitions) if p not in present]

    def params(self) -> dict[str, int]:
        local = sum(int(e["params"]) for e in self.manifest["partitions"])
        glob = int(self.manifest["global"]["params"])
        return {"global": glob, "local": local, "total": glob + local}

    # -- reading -------------------------------------------------------------------------------
    def file(self, entry: dict) -> Path:
        """The path of one manifest entry's file, after checking that its name is plain, that
        it exists and that it is no link leading outside the directory."""
        name = _check_name(entry["file"])
        path = self.path / name
        if not path.is_file():
            raise ModelDirError(f"{self.path}: file {name} listed in the manifest is missing")
        if path.resolve().parent != self.path.resolve():
            raise ModelDirError(f"{path} is a link leading outside the model directory; refusing it")
        return path

    def _check_sha256(self, path: Path, digest: str, entry: dict) -> None:
        if digest != entry["sha256"]:
            raise ModelDirError(f"{path}: sha256 differs from the manifest; the file was changed "
                                "or damaged, refusing to load it")

    def verify(self, entries: Iterable[dict]) -> None:
        """Check the files of ``entries`` as ``read`` does (plain names, no links leading
        outside, sha256 as in the manifest) without loading them: what an edit that copies
        files (crop, extend) checks before it writes anything."""
        for entry in entries:
            path = self.file(entry)
            digest = hashlib.sha256()
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 24):
                    digest.update(chunk)
            self._check_sha256(path, digest.hexdigest(), entry)

    def read(self, entry: dict) -> dict[str, torch.Tensor]:
        """The tensors of one manifest entry, after checking the file's sha256."""
        path = self.file(entry)
        data = path.read_bytes()
        self._check_sha256(path, hashlib.sha256(data).hexdigest(), entry)
        try:
            return st_load(data)
        except Exception as exc:  # safetensors raises its own error types
            raise ModelDirError(f"{path} is not a valid safetensors file: {exc}") from None

    def read_global(self) -> dict[str, torch.Tensor]:
        return self.read(self.manifest["global"])

    def load(self, pids: Iterable[int] | None = None, device: str | torch.device = "cpu",
             optimizer: bool = False, global_tensors: dict[str, torch.Tensor] | None = None
             ) -> tuple[INR, dict[str, torch.Tensor]]:
        """An ``INR`` holding ``pids`` (default: all present), reading only their files.

        Returns the model and, if ``optimizer``, the optimiser tensors found beside the weights
        (keyed ``optim.<state>.<tensor>`` for global tensors and ``optim.<state>.<tensor>@pid``
        for local ones). ``global_tensors`` (from ``read_global``) saves re-reading the global
        file when a caller loads many partition subsets in turn.
        """
        entries = self.entries
        pids = self.partition_ids if pids is None else [int(p) for p in pids]
        absent = [p for p in pids if p not in entries]
        if absent:
            raise ModelDirError(f"{self.path}: partitions {id_ranges(absent)} are not in this model "
                                "(cropped away or never trained)")
        model = INR(self.arch, pids, init=False)
        extra: dict[str, torch.Tensor] = {}
        tensors = global_tensors if global_tensors is not None else self.read_global()
        model.load_global(tensors)
        if optimizer:
            extra.update({k: v for k, v in tensors.items() if k.startswith(OPTIM_PREFIX)})
        for p in pids:
            tensors = self.read(entries[p])
            model.load_local(p, tensors)
            if optimizer:
                extra.update({f"{k}@{p}": v for k, v in tensors.items() if k.startswith(OPTIM_PREFIX)})
        return model.to(device), extra


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link ``src`` to ``dst`` (files are never modified in place, only replaced), or copy
    it where links are impossible (another file system)."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def check_new_directory(path: str | Path, source: Path | None = None) -> Path:
    """Refuse an edit's output directory unless it does not exist yet, or is empty (one line
    that says whether it is the model, a file or a folder with files in it)."""
    path = Path(path)
    if source is not None and path.resolve() == source.resolve():
        raise ModelDirError(f"{path} is the model itself; use --in-place to change it there")
    if path.exists() and not path.is_dir():
        raise ModelDirError(f"{path} is a file, not a directory; choose a new directory")
    if path.exists() and any(path.iterdir()):
        raise ModelDirError(f"{path} already exists and is not empty; choose a new directory")
    return path


def new_directory(path: str | Path, source: Path | None = None) -> Path:
    """Create the output directory of an edit: it must not exist yet, or be empty."""
    path = check_new_directory(path, source)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def staged_directory(path: str | Path, source: Path | None = None) -> Iterator[Path]:
    """A hidden folder beside ``path`` (checked as ``new_directory`` checks it) to build an
    edit's output in: moved to ``path`` when the block ends, removed if it raises, so nothing
    half-written ever appears under ``path``."""
    with staged(check_new_directory(path, source), ModelDirError) as staging:
        yield staging


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


MAX_PARTITIONS = 1 << 24
"""The largest partition grid a manifest may describe (what ``info`` and renders enumerate)."""


def _check_schema(manifest: dict, grid: PartitionGrid, arch: Architecture, path: Path,
                  mpath: Path) -> None:
    """The values the rest of distlg trusts: a known kind, a numeric dtype, channels >= 1, a
    bounded grid, and per file a sha256 and a parameter count that the architecture implies
    and the file's size can hold (so widths are bounded by what is on disk)."""
    signal = SignalInfo.from_dict(manifest["signal"])
    if signal.kind not in AXES:
        raise ModelDirError(f"{mpath}: unknown signal kind {signal.kind!r}")
    if signal.dtype.kind not in "uif" or not 1 <= signal.channels <= 4096:
        raise ModelDirError(f"{mpath}: signal dtype {signal.dtype} with {signal.channels} "
                            "channel(s) is not a numeric signal distlg writes")
    if grid.num_partitions > MAX_PARTITIONS:
        raise ModelDirError(f"{mpath}: a grid of {grid.num_partitions:,} partitions is larger "
                            f"than distlg handles ({MAX_PARTITIONS:,})")
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


def id_ranges(ids: Sequence[int]) -> str:
    """Compact text for a list of ids: 1-4, 7, 9-10."""
    ids = sorted(ids)
    out, start = [], None
    for i, p in enumerate(ids):
        if start is None:
            start = p
        if i + 1 == len(ids) or ids[i + 1] != p + 1:
            out.append(f"{start}" if start == p else f"{start}-{p}")
            start = None
    return ", ".join(out)
