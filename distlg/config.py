"""Configuration: nested dataclasses whose field docstrings are the command line's --help.

A run is described by ``Config`` (signal, partition, model, train and run sections). It can be
built in Python, read from a YAML, TOML or JSON file with the same sections, and overridden by
command-line flags; ``add_arguments`` turns the dataclasses into argparse options (one flag per
field, named after it, grouped by section) and ``from_args`` merges file and flags.
``ExtendConfig`` is the same for ``distlg extend``, and ``add_fields`` / ``given`` do it for any
dataclass (``distlg ingest``'s options too). Settings are checked where they are made (each
dataclass's ``__post_init__``); defaults that depend on the signal's kind live in
``distlg.defaults`` and are written into --help from there.
"""

from __future__ import annotations

import argparse
import collections.abc
import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Optional, Sequence

from . import defaults
from .errors import DistlgError
from .fielddocs import field_docs


class ConfigError(DistlgError):
    """A configuration that cannot be used."""


def _checked(default: Any, ok: Callable[[Any], bool], rule: str, **metadata: Any) -> Any:
    """A field whose value, when set, must satisfy ``ok`` ("<name> must be <rule>")."""
    return field(default=default, metadata={"check": (ok, rule), **metadata})


def _each(ok: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda values: all(ok(v) for v in values)


class _Checked:
    """Settings checked where they are made: every float finite, every ``_checked`` rule met."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value, (tp, _) = getattr(self, f.name), _unwrap(hints[f.name])
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"{f.name} must be a finite number, got {value!r}")
            if typing.get_origin(tp) is Literal and value is not None and value not in typing.get_args(tp):
                *rest, last = typing.get_args(tp)
                raise ConfigError(f"{f.name} must be {', '.join(rest)} or {last}, got {value!r}")
            if "check" in f.metadata and value is not None and not f.metadata["check"][0](value):
                raise ConfigError(f"{f.name.replace('_', ' ')} must be {f.metadata['check'][1]}, "
                                  f"got {value}")


@dataclass
class SignalConfig(_Checked):
    path: str = field(default="builtin:astronaut@256x256",
                      metadata={"flag": "--signal", "metavar": "STORE"})
    """Zarr store written by `distlg ingest`: a path, an http(s):// URL (`distlg[remote]`) or
    an s3:// URL (`distlg[s3]`; endpoint and keys from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
    ...); or builtin:NAME[@HxW] for a scikit-image photograph (e.g. builtin:camera@256x256)."""
    pack: Optional[str] = field(default=None, metadata={"metavar": "PACK"})
    """Stream the signal's chunks from a pack that `distlg pack` wrote for this grid and worker
    count (a folder, an https:// prefix, or a pipe: command to which each file name is appended)
    instead of the store (still read for its description); forces the streaming sampler."""


@dataclass
class PartitionConfig(_Checked):
    factors: Optional[list[int]] = _checked(None, _each(lambda v: v >= 1), ">= 1 on every axis")
    """Partitions per signal axis, e.g. 5 8 8 for (frames, rows, columns). Default: from
    --partition-size."""
    partition_size: Optional[list[int]] = _checked(None, _each(lambda v: v >= 1), ">= 1 on every axis",
                                                   by_kind="partition_size")
    """Target partition size in samples per axis when --factors is not given (one value for
    every axis, or one per axis); 32 per image axis is the paper's rule."""
    overlaps: Optional[list[int]] = _checked(None, _each(lambda v: v >= 0), ">= 0 on every axis",
                                             by_kind="halo")
    """Halo per axis: each partition samples training positions from its box grown by this
    many samples (one value or one per axis; none on unsplit axes). Removes seams."""


@dataclass
class ModelConfig(_Checked):
    arch: Literal["local-global", "per-partition", "siren", "local-global-incode",
                  "per-partition-incode", "incode"] = "local-global"
    """Model family: Local-Global SIREN, SIREN per partition (local only), one SIREN, or their
    INCODE counterparts (sine layers modulated by coefficients computed from the signal)."""
    recipe: Literal["distlg", "paper"] = "distlg"
    """How Local-Global is built. distlg: the global branch capped at --max-global-width and
    evaluated on a coarse lattice per partition, its features entering every local layer as a
    bias (merge "bias"): the cost per sample does not grow with the signal. paper: the
    paper's formulation (global share 10 %, concat merge evaluated at every sample)."""
    params: Optional[int] = _checked(None, lambda v: v >= 1, ">= 1")
    """Total parameter budget; the widths are chosen to match it. Default: signal values
    divided by --compression."""
    compression: Optional[float] = _checked(None, lambda v: v > 0, "> 0", by_kind="compression")
    """Signal values per parameter when --params is not given (images: the paper's image
    setting; audio: its 198 K parameters for a 7 s clip)."""
    global_share: float = _checked(0.1, lambda v: 0 < v < 1, "in (0, 1)")
    """Share of the parameters in the replicated part (global branch and merge)."""
    local_width: Optional[int] = _checked(None, lambda v: v >= 1, ">= 1")
    """Hidden width of every local sub-network (overrides the budget)."""
    global_width: Optional[int] = _checked(None, lambda v: v >= 1, ">= 1")
    """Hidden width of the global branch (overrides the budget)."""
    hidden_layers: int = _checked(3, lambda v: v >= 0, ">= 0")
    """Hidden layers after the first sine layer, in each branch."""
    w0: float = _checked(30.0, lambda v: v > 0, "> 0")
    """SIREN frequency factor: each layer computes sin(w0 (x W + b))."""
    merge: Optional[Literal["shared", "per-depth", "add", "bias"]] = None
    """How local and global features meet: one concat+sine layer shared by all depths (the
    paper's code), one per depth, adding a sine projection of the global features, or the
    global branch on a lattice added as a bias inside each local layer. Default: bias for the
    distlg recipe, shared for the paper's."""
    lattice: Optional[list[int]] = None
    """Lattice cells per partition per axis where the global branch runs (merge bias). Default:
    about 8 samples per cell, coarsened until the corners cost at most a local layer."""
    max_global_width: Optional[int] = _checked(None, lambda v: v >= 1, ">= 1")
    """Largest global width the budget may pick. Default: 64 for the distlg recipe, none for
    the paper's."""
    harmonizer_weights: Optional[str] = field(default=None, metadata={"metavar": "PATH"})
    """INCODE archs: the harmonizer's extractor starts from this safetensors file (torchvision's
    ResNet-34 names: conv1.weight, bn1.weight, layer1.0.conv1.weight, ...; others ignored)."""
    harmonizer_bias: float = 0.0
    """INCODE archs: the harmonizer's last bias, i.e. the (a, b, c, d) it starts near: 0 starts
    from SIREN's activation; the paper's image code uses 0.3120 (lower here: results/incode.md)."""


@dataclass
class StepsConfig(_Checked):
    """How a model's partitions train: what ``train`` and ``extend`` share."""

    steps: Optional[int] = _checked(None, lambda v: v >= 1, ">= 1", by_kind="steps")
    """Optimisation steps."""
    lr: Optional[float] = _checked(None, lambda v: v > 0, "> 0", by_kind="lr")
    """Adam learning rate (the paper's)."""
    schedule: Optional[Literal["constant", "cosine"]] = field(default=None,
                                                             metadata={"by_kind": "schedule"})
    """Learning-rate schedule: constant (the paper's) or cosine decay to --lr-final x lr."""
    lr_final: float = _checked(0.05, lambda v: 0 <= v <= 1, "in [0, 1]")
    """Final learning rate of the cosine schedule, as a fraction of --lr."""
    sample_fraction: Optional[float] = _checked(None, lambda v: 0 < v <= 1, "in (0, 1]",
                                                by_kind="sample_fraction")
    """Fraction of the signal's positions drawn per step, spread equally over partitions (full
    batch: every position every step)."""
    samples_per_partition: Optional[int] = _checked(None, lambda v: v >= 1, ">= 1")
    """Samples drawn from each partition per step (overrides --sample-fraction)."""
    seed: int = _checked(0, lambda v: v >= 0, ">= 0")
    """Seed of the initialisation and of the sampling (non-negative)."""
    memory_budget_gib: float = _checked(4.0, lambda v: v > 0, "> 0")
    """Decoded signal data a worker may hold; beyond it (or with --pack) the sampler streams."""


@dataclass
class TrainConfig(StepsConfig):
    global_lr: Optional[float] = _checked(None, lambda v: v >= 0, ">= 0", by_kind="global_lr")
    """Learning rate of a Local-Global model's replicated part (global branch and merge), as a
    fraction of --lr (the local sub-networks train at --lr)."""
    eval_every: int = _checked(0, lambda v: v >= 0, ">= 0 (0: at the end)")
    """Evaluate PSNR every this many steps (0: only at the end)."""
    eval: Literal["auto", "full", "sample"] = "auto"
    """How the PSNR is scored: full (every value, streamed over all workers), sample (a fixed
    random subset of whole partitions, about 4 M values, reported with its 95 % confidence
    interval), or auto (sample above 10^7 values, else full)."""
    log_every: int = _checked(25, lambda v: v >= 1, ">= 1")
    """Log the loss every this many steps."""
    threads: Optional[int] = _checked(None, lambda v: v >= 1, ">= 1")
    """CPU threads per worker. Default: the cores divided among the workers on this machine."""
    device: Optional[Literal["cpu", "cuda"]] = None
    """Device to train on: cpu, or cuda (each worker of `accelerate launch` takes its own GPU;
    CUDA_VISIBLE_DEVICES chooses which). Default: the accelerator's choice."""
    precision: Literal["fp32", "tf32", "bf16"] = "fp32"
    """Matmul precision: fp32; tf32 (CUDA's TF32 tensor cores for float32 matmuls; the same as
    fp32 on a CPU); bf16 (bfloat16 matmul inputs, float32 results; sines, biases and the loss
    stay float32)."""
    kernel: Literal["torch", "triton"] = "torch"
    """Local layers through torch (every device) or a fused Triton kernel (CUDA only)."""
    cuda_graph: bool = False
    """On CUDA, replay each training step's kernels as one captured CUDA graph (SIREN
    activations; a step that cannot be captured runs as usual, with a warning)."""


@dataclass
class ExtendConfig(StepsConfig):
    """How ``distlg extend`` trains the new partitions (the global branch stays frozen);
    defaults are the trainer's for the signal's kind."""

    threads: Optional[int] = _checked(None, lambda v: v >= 1, ">= 1")
    """CPU threads. Default: torch's."""
    device: Literal["cpu", "cuda"] = "cpu"
    """Device to train on."""
    progress: bool = True
    """Show a progress bar."""


@dataclass
class RunConfig(_Checked):
    out: str = field(default="storage/runs/default", metadata={"metavar": "DIR"})
    """Run directory: checkpoints, TensorBoard logs and the exported model."""
    checkpoint_every: int = _checked(500, lambda v: v >= 0, ">= 0 (0: at the end)")
    """Write a checkpoint every this many steps, and at the end (0: only at the end). The two
    latest are kept; --resume loses at most this many steps."""
    resume: bool = False
    """Continue from the latest complete checkpoint in --out (any number of workers)."""
    overwrite: bool = False
    """Start afresh in an --out that holds a run already, deleting that run's checkpoints,
    model, history and logs (without it, or --resume, such an --out is refused)."""
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
            values = data.get(f.name) or {}
            if not isinstance(values, dict):
                raise ConfigError(f"config section {f.name} must be a mapping of settings "
                                  f"(e.g. {f.name}: {{path: ...}}), got {values!r}")
            values = dict(values)
            sub = f.default_factory()
            known = {g.name for g in dataclasses.fields(sub)}
            for key in list(values):
                if key.replace("-", "_") not in known:
                    raise ConfigError(f"unknown setting {f.name}.{key}")
            sections[f.name] = dataclasses.replace(sub, **{
                k.replace("-", "_"): _coerce(sub, k.replace("-", "_"), v) for k, v in values.items()})
        if extra := set(data) - set(sections):
            raise ConfigError(f"unknown config section(s): {', '.join(sorted(extra))}")
        return cls(**sections)

    def replace(self, **overrides: Any) -> "Config":
        """A copy with ``section__field=value`` or unique ``field=value`` overrides; an unknown
        section or setting is a ``ConfigError``."""
        data = self.to_dict()
        for key, value in overrides.items():
            section, name = _locate(key)
            data[section][name] = value
        return Config.from_dict(data)


def load(path: str | Path) -> Config:
    """Read a YAML (.yaml/.yml), TOML (.toml) or JSON config file."""
    path = Path(path)
    if path.is_dir() or path.suffix not in (".yaml", ".yml", ".toml", ".json"):
        what = "a folder" if path.is_dir() else "not a .yaml, .yml, .toml or .json file"
        raise ConfigError(f"{path} is {what}, so not a config file; a signal is given as "
                          f"--signal {path}")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml
            data = yaml.safe_load(text) or {}
        elif path.suffix == ".toml":
            import tomllib
            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # parse errors of any of the three formats
        raise ConfigError(f"cannot parse {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections")
    return Config.from_dict(data)


# -- command line --------------------------------------------------------------------------------
def _sections() -> list[tuple[str, type]]:
    return [(f.name, f.default_factory) for f in dataclasses.fields(Config)]


def _locate(key: str) -> tuple[str, str]:
    if "__" in key:
        section, name = key.split("__", 1)
        sections = [s for s, _ in _sections()]
        if section not in sections:
            raise ConfigError(f"unknown config section {section!r} in {key!r}; the sections are "
                              f"{', '.join(sections)}")
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
        if tp is float and not math.isfinite(float(value)):
            raise ConfigError(f"{name} must be a finite number, got {value!r}")
        return tp(value)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"{name}: cannot use {value!r}") from None


_METAVARS = {int: "N", float: "X", str: "TEXT"}


def add_fields(group: Any, cls: type, prefix: str = "", names: Sequence[str] | None = None) -> None:
    """One option per field of the dataclass ``cls`` (or those in ``names``), named after it,
    help from the docstring under it (with the kind-dependent defaults of ``distlg.defaults``
    where the field says ``by_kind``), stored as ``prefix + name``; only given flags are set."""
    docs, hints = field_docs(cls), typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.init and (names is None or f.name in names):
            group.add_argument(f.metadata.get("flag", "--" + f.name.replace("_", "-")),
                               **_option(f, hints[f.name], docs.get(f.name, ""), prefix))


def _option(f: dataclasses.Field, hint: Any, doc: str, prefix: str) -> dict[str, Any]:
    """argparse keywords for field ``f``."""
    tp, _ = _unwrap(hint)
    default = f.default if f.default is not dataclasses.MISSING else None
    if "by_kind" in f.metadata:
        doc += " " + defaults.describe(f.metadata["by_kind"])
    elif default is not None and "Default" not in doc:
        doc += f" (default: {default})"
    # argparse formats help with %
    kwargs: dict[str, Any] = dict(dest=prefix + f.name, default=argparse.SUPPRESS,
                                  help=doc.replace("%", "%%"))
    if tp is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    elif typing.get_origin(tp) in (list, collections.abc.Sequence):
        kwargs.update(nargs="+", type=typing.get_args(tp)[0], metavar="N")
    elif typing.get_origin(tp) is Literal:
        kwargs.update(choices=typing.get_args(tp))
    else:
        kwargs.update(type=tp, metavar=_METAVARS.get(tp, "VALUE"))
    if "choices" in f.metadata:
        kwargs.update(choices=f.metadata["choices"], metavar=None)
    kwargs["metavar"] = f.metadata.get("metavar", kwargs.get("metavar"))
    return {k: v for k, v in kwargs.items() if k != "metavar" or v is not None}


def given(args: argparse.Namespace, cls: type, prefix: str = "") -> dict[str, Any]:
    """The fields of ``cls`` set on the command line (``add_fields`` with ``prefix``)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k[len(prefix):]: v for k, v in vars(args).items()
            if k.startswith(prefix) and k[len(prefix):] in names}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One option per config field, grouped by section; defaults come from the file/dataclass."""
    for section, cls in _sections():
        add_fields(parser.add_argument_group(f"{section} options"), cls, f"{section}__")


def from_args(args: argparse.Namespace, file: str | None = None) -> Config:
    """The config of ``file`` (if any) with every flag given on the command line applied."""
    config = load(file) if file else Config()
    overrides = {k: v for k, v in vars(args).items() if "__" in k}
    return config.replace(**overrides) if overrides else config
