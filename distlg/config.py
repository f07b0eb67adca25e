"""Configuration: nested dataclasses whose field docstrings are the command line's --help.

A run is described by ``Config`` (signal, partition, model, train sections). It can be built in
Python, read from a YAML or TOML file with the same sections, and overridden by command-line
flags; ``add_arguments`` turns the dataclasses into argparse options (one flag per field, named
after it, grouped by section) and ``from_args`` merges file and flags.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from .errors import DistlgError


class ConfigError(DistlgError):
    """A configuration that cannot be used."""


@dataclass
class SignalConfig:
    path: str = field(default="builtin:astronaut@256x256",
                      metadata={"flag": "--signal", "metavar": "STORE"})
    """Zarr store written by `distlg ingest`, or builtin:NAME[@HxW] for a scikit-image
    photograph (e.g. builtin:camera@256x256)."""


@dataclass
class PartitionConfig:
    factors: Optional[list[int]] = None
    """Partitions per signal axis, e.g. 5 8 8 for (frames, rows, columns). Default: from
    --partition-size."""
    partition_size: Optional[list[int]] = None
    """Target partition size in samples per axis when --factors is not given (one value for
    every axis, or one per axis). Default: 32 per image axis, the paper's rule; video 50 32 32;
    audio 1/32 of the clip; volumes 32."""
    overlaps: Optional[list[int]] = None
    """Halo per axis: each partition samples training positions from its box grown by this
    many samples (one value or one per axis). Removes seams. Default: 0; video 1 2 2."""


@dataclass
class ModelConfig:
    arch: Literal["local-global", "per-partition", "siren"] = "local-global"
    """Model family: Local-Global SIREN, SIREN per partition (local only), or one SIREN."""
    recipe: Literal["distlg", "paper"] = "distlg"
    """How Local-Global is built. distlg: the global branch capped at --max-global-width and
    evaluated on a coarse lattice per partition, its features entering every local layer as a
    bias (merge "bias"): the cost per sample does not grow with the signal. paper: the
    paper's formulation (global share 10 %, concat merge evaluated at every sample)."""
    params: Optional[int] = None
    """Total parameter budget; the widths are chosen to match it. Default: signal values
    divided by --compression."""
    compression: Optional[float] = None
    """Signal values per parameter when --params is not given. Default: 4 for images (the
    paper's image setting), 1.5 for audio (its 198 K parameters for a 7 s clip), 64 for video
    and volumes."""
    global_share: float = 0.1
    """Share of the parameters in the replicated part (global branch and merge)."""
    local_width: Optional[int] = None
    """Hidden width of every local sub-network (overrides the budget)."""
    global_width: Optional[int] = None
    """Hidden width of the global branch (overrides the budget)."""
    hidden_layers: int = 3
    """Hidden layers after the first sine layer, in each branch."""
    w0: float = 30.0
    """SIREN frequency factor: each layer computes sin(w0 (x W + b))."""
    merge: Optional[Literal["shared", "per-depth", "add", "bias"]] = None
    """How local and global features meet: one concat+sine layer shared by all depths (the
    paper's code), one per depth, adding a sine projection of the global features, or the
    global branch on a lattice added as a bias inside each local layer. Default: bias for the
    distlg recipe, shared for the paper's."""
    lattice: Optional[list[int]] = None
    """Lattice cells per partition per axis where the global branch runs (merge bias). Default:
    about 8 samples per cell, coarsened until the corners cost at most a local layer."""
    max_global_width: Optional[int] = None
    """Largest global width the budget may pick. Default: 64 for the distlg recipe, none for
    the paper's."""


@dataclass
class TrainConfig:
    steps: Optional[int] = None
    """Optimisation steps. Default: 2000 for images, 1000 for audio, 1500 otherwise."""
    lr: Optional[float] = None
    """Adam learning rate. Default: 5e-4 for images, 1e-4 otherwise (the paper's)."""
    schedule: Literal["constant", "cosine"] = "constant"
    """Learning-rate schedule: constant (the paper's) or cosine decay to --lr-final x lr."""
    lr_final: float = 0.05
    """Final learning rate of the cosine schedule, as a fraction of --lr."""
    global_lr: Optional[float] = None
    """Learning rate of a Local-Global model's replicated part (global branch and merge), as a
    fraction of --lr (the local sub-networks train at --lr). Default: 0.3 for images, 1
    otherwise."""
    sample_fraction: Optional[float] = None
    """Fraction of the signal's positions drawn per step, spread equally over partitions.
    Default: full batch (every position every step) for images and audio, 0.02 otherwise."""
    samples_per_partition: Optional[int] = None
    """Samples drawn from each partition per step (overrides --sample-fraction)."""
    seed: int = 0
    """Seed of the initialisation and of the sampling."""
    eval_every: int = 0
    """Evaluate PSNR every this many steps (0: only at the end)."""
    eval: Literal["auto", "full", "sample"] = "auto"
    """How the PSNR is scored: full (every value, streamed over all workers), sample (a fixed
    random subset of whole partitions, about 4 M values, reported with its 95 % confidence
    interval), or auto (sample above 10^7 values, else full)."""
    log_every: int = 25
    """Log the loss every this many steps."""
    memory_budget_gib: float = 4.0
    """Decoded signal data a worker may hold; beyond it the sampler streams from the store."""
    threads: Optional[int] = None
    """CPU threads per worker. Default: the cores divided among the workers on this machine."""
    device: Optional[str] = None
    """Device to train on (cpu, cuda). Default: the accelerator's choice."""
    precision: Literal["fp32", "tf32", "bf16"] = "fp32"
    """Matmul precision: fp32; tf32 (CUDA's TF32 tensor cores for float32 matmuls; the same as
    fp32 on a CPU); bf16 (bfloat16 matmul inputs, float32 results; sines, biases and the loss
    stay float32)."""
    kernel: Literal["torch", "triton"] = "torch"
    """Local layers through torch (every device) or a fused Triton kernel (CUDA only)."""


@dataclass
class RunConfig:
    out: str = field(default="storage/runs/default", metadata={"metavar": "DIR"})
    """Run directory: checkpoints, TensorBoard logs and the exported model."""
    checkpoint_every: int = 500
    """Write a checkpoint every this many steps, and at the end (0: only at the end). The two
    latest are kept; --resume loses at most this many steps."""
    resume: bool = False
    """Continue from the latest complete checkpoint in --out (any number of workers)."""
    tensorboard: bool = True
    """Write TensorBoard logs under --out through accelerate's tracker."""
    progress: bool = True
    """Show a progress bar on the main worker."""


@dataclass
class Config:
    signal: SignalConfig = field(default_factory=SignalConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Config":
        """Build from nested mappings (as read from YAML/TOML/JSON); unknown keys are errors."""
        sections = {}
        for f in dataclasses.fields(cls):
            values = dict(data.get(f.name) or {})
            sub = f.default_factory()
            known = {g.name for g in dataclasses.fields(sub)}
            for key in list(values):
                if key.replace("-", "_") not in known:
                    raise ConfigError(f"unknown setting {f.name}.{key}")
            sections[f.name] = dataclasses.replace(sub, **{
                k.replace("-", "_"): _coerce(sub, k.replace("-", "_"), v) for k, v in values.items()})
        extra = set(data) - set(sections)
        if extra:
            raise ConfigError(f"unknown config section(s): {', '.join(sorted(extra))}")
        return cls(**sections)

    def replace(self, **overrides: Any) -> "Config":
        """A copy with ``section__field=value`` or unique ``field=value`` overrides."""
        data = self.to_dict()
        for key, value in overrides.items():
            section, name = _locate(key)
            data[section][name] = value
        return Config.from_dict(data)


def load(path: str | Path) -> Config:
    """Read a YAML (.yaml/.yml), TOML (.toml) or JSON config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml
            data = yaml.safe_load(text) or {}
        elif path.suffix == ".toml":
            import tomllib
            data = tomllib.loads(text)
        elif path.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"config file {path} must end in .yaml, .yml, .toml or .json")
    except ConfigError:
        raise
    except Exception as exc:  # parse errors of any of the three formats
        raise ConfigError(f"cannot parse {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections")
    return Config.from_dict(data)


# -- command line --------------------------------------------------------------------------------
def field_docs(cls: type) -> dict[str, str]:
    """The docstring written under each field of a dataclass (read from its source)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    docs, body = {}, tree.body[0].body
    for node, nxt in zip(body, body[1:]):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)):
            docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _sections() -> list[tuple[str, type]]:
    return [(f.name, f.default_factory) for f in dataclasses.fields(Config)]


def _locate(key: str) -> tuple[str, str]:
    if "__" in key:
        section, name = key.split("__", 1)
        return section, name
    hits = [s for s, cls in _sections() if key in {f.name for f in dataclasses.fields(cls)}]
    if len(hits) != 1:
        raise ConfigError(f"unknown setting {key!r}")
    return hits[0], key


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(inner type, optional?) of Optional[X] / X | None."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def _coerce(obj: Any, name: str, value: Any) -> Any:
    tp, optional = _unwrap(typing.get_type_hints(type(obj))[name])
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{name} cannot be empty")
    try:
        if typing.get_origin(tp) is list:
            (item,) = typing.get_args(tp)
            items = value if isinstance(value, (list, tuple)) else [value]
            return [item(v) for v in items]
        if typing.get_origin(tp) is Literal:
            if value not in typing.get_args(tp):
                raise ConfigError(f"{name} must be one of {', '.join(typing.get_args(tp))}, "
                                  f"got {value!r}")
            return value
        if tp is bool and not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        if tp is int and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return tp(value)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{name}: cannot use {value!r}") from None


_METAVARS = {int: "N", float: "X", str: "TEXT"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per config field, grouped by section; defaults come from the file/dataclass."""
    for section, cls in _sections():
        group = parser.add_argument_group(f"{section} options")
        docs = field_docs(cls)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp, _ = _unwrap(hints[f.name])
            default = f.default if f.default is not dataclasses.MISSING else None
            help_text = docs.get(f.name, "").replace("%", "%%")  # argparse formats help with %
            if default is not None and "Default" not in help_text:
                help_text += f" (default: {default})"
            kwargs: dict[str, Any] = dict(dest=f"{section}__{f.name}", default=argparse.SUPPRESS,
                                          help=help_text)
            if tp is bool:
                kwargs["action"] = argparse.BooleanOptionalAction
            elif typing.get_origin(tp) is list:
                kwargs.update(nargs="+", type=typing.get_args(tp)[0], metavar="N")
            elif typing.get_origin(tp) is Literal:
                kwargs.update(choices=typing.get_args(tp))
            else:
                kwargs.update(type=tp, metavar=_METAVARS.get(tp, "VALUE"))
            kwargs["metavar"] = f.metadata.get("metavar", kwargs.get("metavar"))
            if kwargs["metavar"] is None:
                del kwargs["metavar"]
            group.add_argument(f.metadata.get("flag", _flag(f.name)), **kwargs)


def from_args(args: argparse.Namespace, file: str | None = None) -> Config:
    """The config of ``file`` (if any) with every flag given on the command line applied."""
    config = load(file) if file else Config()
    overrides = {k: v for k, v in vars(args).items() if "__" in k}
    return config.replace(**overrides) if overrides else config
