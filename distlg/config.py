"""Configuration: nested dataclasses whose field docstrings are the command line's --help.

A run is described by ``Config`` (signal, partition, model, train and run sections). It can be
built in Python, read from a YAML, TOML or JSON file with the same sections, and overridden by
command-line flags (``distlg.flags`` turns the dataclasses into argparse options, one flag per
field, its --help the docstring under the field). ``ExtendConfig`` is the same for
``distlg extend``. Settings are checked where they are made (each
dataclass's ``__post_init__``). Every default and every choice lives in ``distlg.defaults``
(the tables per kind and per recipe are written into --help from there); a setting left
empty (None) means "the kind's or the recipe's", and ``Config.resolved`` fills them in, once,
for a given signal: what the plan and the trainer read has no empty setting left to guess.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Optional, Protocol, Sequence

from . import defaults
from .defaults import Arch, Device, Kernel, Merge, Precision, Recipe, Schedule, Scoring
from .errors import DistlgError


class ConfigError(DistlgError):
    """A configuration that cannot be used."""


def _checked(default: Any, ok: Callable[[Any], bool], rule: str, **metadata: Any) -> Any:
    """A field whose value, when set, must satisfy ``ok`` ("<name> must be <rule>")."""
    return field(default=default, metadata={"check": (ok, rule), **metadata})


def _each(ok: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda values: all(ok(v) for v in values)


def per_axis(values: Sequence[int] | None, ndim: int, name: str) -> tuple[int, ...] | None:
    """``values`` for each of ``ndim`` axes (one value stands for every axis); None stays None."""
    if values is None:
        return None
    values = list(values)
    if len(values) == 1:
        values = values * ndim
    if len(values) != ndim:
        raise ConfigError(f"{name} needs 1 or {ndim} values for a {ndim}-axis signal, got {len(values)}")
    return tuple(int(v) for v in values)


class Described(Protocol):
    """What resolving the settings reads of a signal (``distlg.data.signal.SignalInfo``)."""

    kind: str
    shape: tuple[int, ...]
    channels: int
    noise: str | None
    ingest_factors: tuple[int, ...] | None


class _Checked:
    """Settings checked where they are made: every float finite, every ``_checked`` rule met."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value, (tp, _) = getattr(self, f.name), unwrap_optional(hints[f.name])
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
    """Partitions per signal axis, e.g. 5 8 8 for (frames, rows, columns). Default: the grid
    the store was ingested for (unless --partition-size is given), else from --partition-size."""
    partition_size: Optional[list[int]] = _checked(None, _each(lambda v: v >= 1), ">= 1 on every axis",
                                                   table="partition_size")
    """Target partition size in samples per axis when --factors is not given (one value for
    every axis, or one per axis); 32 per image axis is the paper's rule."""
    overlaps: Optional[list[int]] = _checked(None, _each(lambda v: v >= 0), ">= 0 on every axis",
                                             table="halo")
    """Halo per axis: each partition samples training positions from its box grown by this
    many samples (one value or one per axis; none on unsplit axes). Removes seams."""

    def resolved(self, kind: str, shape: Sequence[int], arch: str,
                 recorded: Sequence[int] | None = None) -> "PartitionConfig":
        """Factors, partition size and overlaps for each axis of a ``kind`` signal of
        ``shape``: as given; one SIREN's one partition; the grid its store was chunked for
        (``recorded``) when neither --factors nor --partition-size is given; else the grid
        rule (``defaults.grid_factors``)."""
        ndim = len(shape)
        factors = per_axis(self.factors, ndim, "factors")
        size = per_axis(self.partition_size, ndim, "partition size")
        if factors is None and defaults.base_arch(arch) == "siren":
            factors = (1,) * ndim
        elif factors is None and size is None and recorded is not None and len(recorded) == ndim:
            factors = tuple(recorded)
        factors, size = defaults.grid_factors(kind, shape, factors, size)
        overlaps = per_axis(self.overlaps, ndim, "overlaps")
        if overlaps is None:
            overlaps = defaults.overlaps(kind, factors, arch)
        return dataclasses.replace(self, factors=list(factors), partition_size=list(size),
                                   overlaps=list(overlaps))


@dataclass
class ModelConfig(_Checked):
    arch: Arch = "local-global"
    """Model family: Local-Global SIREN, SIREN per partition (local only), one SIREN, or their
    INCODE counterparts (sine layers modulated by coefficients computed from the signal)."""
    recipe: Recipe = "distlg"
    """How Local-Global is built. distlg: the global branch capped at --max-global-width and
    evaluated on a coarse lattice per partition, its features entering every local layer as a
    bias (merge "bias"): the cost per sample does not grow with the signal. paper: the
    paper's formulation (global share 10 %, concat merge evaluated at every sample)."""
    params: Optional[int] = _checked(None, lambda v: v >= 1, ">= 1")
    """Total parameter budget; the widths are chosen to match it. Default: signal values
    divided by --compression."""
    compression: Optional[float] = _checked(None, lambda v: v > 0, "> 0", table="compression")
    """Signal values per parameter when --params is not given (images: the paper's image
    setting; audio: its 198 K parameters for a 7 s clip)."""
    global_share: float = _checked(defaults.GLOBAL_SHARE, lambda v: 0 < v < 1, "in (0, 1)")
    """Share of the parameters in the replicated part (global branch and merge)."""
    local_width: Optional[int] = _checked(None, lambda v: v >= 1, ">= 1")
    """Hidden width of every local sub-network (overrides the budget)."""
    global_width: Optional[int] = _checked(None, lambda v: v >= 1, ">= 1")
    """Hidden width of the global branch (overrides the budget)."""
    hidden_layers: int = _checked(defaults.HIDDEN_LAYERS, lambda v: v >= 0, ">= 0")
    """Hidden layers after the first sine layer, in each branch."""
    w0: float = _checked(defaults.W0, lambda v: v > 0, "> 0")
    """SIREN frequency factor: each layer computes sin(w0 (x W + b))."""
    merge: Optional[Merge] = field(default=None, metadata={"table": "merge"})
    """How local and global features meet: one concat+sine layer shared by all depths (the
    paper's code), one per depth, adding a sine projection of the global features, or the
    global branch on a lattice added as a bias inside each local layer."""
    lattice: Optional[list[int]] = None
    """Lattice cells per partition per axis where the global branch runs (merge bias). Default:
    about 8 samples per cell, coarsened until the corners cost at most a local layer."""
    max_global_width: Optional[int] = _checked(None, lambda v: v >= 1, ">= 1",
                                               table="max_global_width")
    """Largest global width the budget may pick."""
    harmonizer_weights: Optional[str] = field(default=None, metadata={"metavar": "PATH"})
    """INCODE archs: the harmonizer's extractor starts from this safetensors file (torchvision's
    ResNet-34 names: conv1.weight, bn1.weight, layer1.0.conv1.weight, ...; others ignored)."""
    harmonizer_bias: float = 0.0
    """INCODE archs: the harmonizer's last bias, i.e. the (a, b, c, d) it starts near: 0 starts
    from SIREN's activation; the paper's image code uses 0.3120 (lower here: results/incode.md)."""

    def resolved(self, kind: str, values: int) -> "ModelConfig":
        """The recipe's merge and global width cap (None after this: no cap), the kind's
        compression, and the budget of a signal of ``values`` numbers unless widths are given."""
        recipe = defaults.BY_RECIPE[self.recipe]
        compression = self.compression or defaults.for_kind(kind).compression
        params = self.params
        if params is None and not (self.local_width or self.global_width):
            params = round(values / compression)
        cap = self.max_global_width if self.max_global_width is not None else recipe.max_global_width
        return dataclasses.replace(self, merge=self.merge or recipe.merge, compression=compression,
                                   params=params, max_global_width=cap)


@dataclass
class StepsConfig(_Checked):
    """How a model's partitions train: what ``train`` and ``extend`` share."""

    steps: Optional[int] = _checked(None, lambda v: v >= 1, ">= 1", table="steps")
    """Optimisation steps."""
    lr: Optional[float] = _checked(None, lambda v: v > 0, "> 0", table="lr")
    """Adam learning rate (the paper's for images; for the other kinds a sweep's, benchmarks/sweep.py)."""
    schedule: Optional[Schedule] = field(default=None, metadata={"table": "schedule"})
    """Learning-rate schedule: constant (the paper's) or cosine decay to --lr-final x lr."""
    lr_final: float = _checked(0.05, lambda v: 0 <= v <= 1, "in [0, 1]")
    """Final learning rate of the cosine schedule, as a fraction of --lr."""
    sample_fraction: Optional[float] = _checked(None, lambda v: 0 < v <= 1, "in (0, 1]",
                                                table="sample_fraction")
    """Fraction of the signal's positions drawn per step, spread equally over partitions (full
    batch: every position every step)."""
    samples_per_partition: Optional[int] = _checked(None, lambda v: v >= 1, ">= 1")
    """Samples drawn from each partition per step (overrides --sample-fraction)."""
    seed: int = _checked(0, lambda v: 0 <= v < 2**64, "in [0, 2^64)")
    """Seed of the initialisation and of the sampling (non-negative)."""
    memory_budget_gib: float = _checked(defaults.MEMORY_BUDGET_GIB, lambda v: v > 0, "> 0")
    """Decoded signal data a worker may hold; beyond it (or with --pack) the sampler streams."""

    @property
    def memory_budget(self) -> int:
        """``memory_budget_gib`` in bytes."""
        return int(self.memory_budget_gib * 2**30)

    def resolved(self, kind: str, positions: int, partitions: int, denoising: bool = False):
        """The kind's steps (``DENOISING_STEPS`` when ``denoising``), rates, schedule and
        sampling where none is given; a sample fraction becomes ``fraction * positions /
        partitions`` samples per partition (None stays: full batch)."""
        d = defaults.for_kind(kind)
        steps = self.steps or (defaults.DENOISING_STEPS if denoising else d.steps)
        fraction = self.sample_fraction if self.sample_fraction is not None else d.sample_fraction
        n = self.samples_per_partition
        if n is None and fraction is not None:
            n = max(1, round(fraction * positions / partitions))
        return dataclasses.replace(self, steps=steps, lr=self.lr or d.lr,
                                   schedule=self.schedule or d.schedule, sample_fraction=fraction,
                                   samples_per_partition=n, **self._kind_rates(d))

    def _kind_rates(self, d: defaults.KindDefaults) -> dict[str, Any]:
        return {}


@dataclass
class TrainConfig(StepsConfig):
    global_lr: Optional[float] = _checked(None, lambda v: v >= 0, ">= 0", table="global_lr")
    """Learning rate of a Local-Global model's replicated part (global branch and merge), as a
    fraction of --lr (the local sub-networks train at --lr)."""
    eval_every: int = _checked(0, lambda v: v >= 0, ">= 0 (0: at the end)")
    """Evaluate PSNR every this many steps (0: only at the end)."""
    eval: Scoring = "auto"
    """How the PSNR is scored: full (every value, streamed over all workers), sample (a fixed
    random subset of whole partitions, about 4 M values, reported with its 95 % confidence
    interval), or auto (sample above 10^7 values, else full)."""
    log_every: int = _checked(25, lambda v: v >= 1, ">= 1")
    """Log the loss every this many steps."""
    threads: Optional[int] = _checked(None, lambda v: v >= 1, ">= 1")
    """CPU threads per worker. Default: the cores divided among the workers on this machine."""
    device: Optional[Device] = None
    """Device to train on: cpu, or cuda (each worker of `accelerate launch` takes its own GPU;
    CUDA_VISIBLE_DEVICES chooses which). Default: the accelerator's choice."""
    precision: Precision = "fp32"
    """Matmul precision: fp32; tf32 (CUDA's TF32 tensor cores for float32 matmuls; the same as
    fp32 on a CPU); bf16 (bfloat16 matmul inputs, float32 results; sines, biases and the loss
    stay float32)."""
    kernel: Kernel = "torch"
    """Local layers through torch (every device) or a fused Triton kernel (CUDA only)."""
    cuda_graph: bool = False
    """On CUDA, replay each training step's kernels as one captured CUDA graph (SIREN
    activations; a step that cannot be captured runs as usual, with a warning)."""

    def _kind_rates(self, d: defaults.KindDefaults) -> dict[str, Any]:
        return {"global_lr": d.global_lr if self.global_lr is None else self.global_lr}


@dataclass
class ExtendConfig(StepsConfig):
    """How ``distlg extend`` trains the new partitions (the global branch stays frozen);
    defaults are the trainer's for the signal's kind."""

    threads: Optional[int] = _checked(None, lambda v: v >= 1, ">= 1")
    """CPU threads. Default: torch's."""
    device: Device = "cpu"
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

    def resolved(self, signal: Described) -> "Config":
        """Every setting left to the signal's kind or the recipe given its value for ``signal``
        (the grid its store records, when none is asked for): the one place where a run's
        defaults are decided. Resolving twice changes nothing."""
        kind, shape = signal.kind, tuple(signal.shape)
        partition = self.partition.resolved(kind, shape, self.model.arch, signal.ingest_factors)
        train = self.train.resolved(kind, math.prod(shape), math.prod(partition.factors),
                                    denoising=kind == "image" and signal.noise is not None)
        model = self.model.resolved(kind, math.prod(shape) * signal.channels)
        return dataclasses.replace(self, partition=partition, model=model, train=train)

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


# -- names and types --------------------------------------------------------------------------------
def sections() -> list[tuple[str, type]]:
    return [(f.name, f.default_factory) for f in dataclasses.fields(Config)]


def _locate(key: str) -> tuple[str, str]:
    if "__" in key:
        section, name = key.split("__", 1)
        names = [s for s, _ in sections()]
        if section not in names:
            raise ConfigError(f"unknown config section {section!r} in {key!r}; the sections are "
                              f"{', '.join(names)}")
        return section, name
    hits = [s for s, cls in sections() if key in {f.name for f in dataclasses.fields(cls)}]
    if len(hits) != 1:
        raise ConfigError(f"unknown setting {key!r}")
    return hits[0], key


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """(inner type, optional?) of Optional[X] / X | None."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return tp, False


def _coerce(obj: Any, name: str, value: Any) -> Any:
    tp, optional = unwrap_optional(typing.get_type_hints(type(obj))[name])
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
