"""The architecture of a Local-Global INR (or a baseline): every number needed to rebuild its
tensors, stored in checkpoints and manifests. ``distlg.nn.model`` holds the module itself.

Each SIREN family member has an INCODE counterpart (``local-global-incode``,
``per-partition-incode``, ``incode``): the same tensors, with every sine layer's activation
modulated by four coefficients (a, b, c, d) per set of layers. A model keeps its coefficients
as constants (``incode.coefficients`` [sets, 4], in the global file); in training they come
from the harmonizer (``distlg.nn.incode``), which lives in checkpoints only. The sets:

- ``incode``: one set, the global branch's layers; ``per-partition-incode``: one, the local
  layers;
- ``local-global-incode``: local and global, plus the merge's set where the merge has its own
  sine layer (``shared``, ``per-depth``, ``add``: 12 coefficients). The lattice merge ``bias``
  (distlg's recipe) has none: its global features enter the local layers linearly, inside the
  local activation, so it takes 8.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from .. import defaults
from ..defaults import ARCHS, INCODE_ARCHS, MERGES, SIREN_ARCHS, base_arch  # noqa: F401 - re-exported
from ..errors import DistlgError

COEFFICIENTS = "incode.coefficients"
"""Name of an INCODE model's stored activation coefficients [sets, 4] (a, b, c, d per set)."""


def runs_on_lattice(arch: str, merge: str) -> bool:
    """Whether ``arch`` with ``merge`` runs its global branch on a lattice (distlg's recipe)."""
    return base_arch(arch) == "local-global" and merge == "bias"


@dataclass(frozen=True)
class Architecture:
    """Everything needed to rebuild a model's tensors; stored in checkpoints and manifests."""

    arch: str
    in_dims: int
    out_dims: int
    hidden_layers: int = defaults.HIDDEN_LAYERS
    local_width: int = 0
    global_width: int = 0
    w0: float = defaults.W0
    merge: str = defaults.PAPER.merge
    coord_scale: tuple[float, ...] = ()
    """Factor applied to each input coordinate (audio uses 100: its time axis spans [-100, 100])."""
    lattice: tuple[int, ...] = ()
    """Lattice cells per partition per axis where the global branch runs (merge "bias")."""
    grid_factors: tuple[int, ...] = ()
    """Partitions per axis of the grid the lattice follows (ids are their C-order ravel)."""
    cell_origin: tuple[float, ...] = ()
    """Coordinate of partition 0's lower box edge, per axis (before ``coord_scale``)."""
    part_size: tuple[float, ...] = ()
    """Extent of one partition's box in coordinates, per axis."""

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise DistlgError(f"unknown architecture {self.arch!r}; choose one of {', '.join(ARCHS)}")
        if self.merge not in MERGES:
            raise DistlgError(f"unknown merge {self.merge!r}; choose one of {', '.join(MERGES)}")
        if self.hidden_layers < 0:
            raise DistlgError("hidden_layers must be >= 0")
        if self.has_local and self.local_width < 1:
            raise DistlgError(f"{self.arch} needs local_width >= 1")
        if self.has_global and self.global_width < 1:
            raise DistlgError(f"{self.arch} needs global_width >= 1")
        scale = tuple(float(s) for s in self.coord_scale) or (1.0,) * self.in_dims
        if len(scale) != self.in_dims:
            raise DistlgError(f"coord_scale has {len(scale)} entries for {self.in_dims} input dims")
        object.__setattr__(self, "coord_scale", scale)
        for name in ("lattice", "grid_factors", "cell_origin", "part_size"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.on_lattice:
            geometry = (self.lattice, self.grid_factors, self.cell_origin, self.part_size)
            if any(len(t) != self.in_dims for t in geometry) or min(self.lattice) < 1 \
                    or min(self.grid_factors) < 1 or min(self.part_size) <= 0:
                raise DistlgError("merge 'bias' needs lattice, grid_factors, cell_origin and "
                                  f"part_size with {self.in_dims} valid entries each")

    @property
    def base(self) -> str:
        """The SIREN family member this architecture is built like."""
        return base_arch(self.arch)

    @property
    def incode(self) -> bool:
        return self.arch in INCODE_ARCHS

    @property
    def has_local(self) -> bool:
        return self.base != "siren"

    @property
    def has_global(self) -> bool:
        return self.base != "per-partition"

    @property
    def on_lattice(self) -> bool:
        """The global branch runs on a lattice of points, not at every sample."""
        return runs_on_lattice(self.arch, self.merge)

    @property
    def global_at_samples(self) -> bool:
        """The global branch runs at every sample (not on a lattice, not absent)."""
        return self.has_global and not self.on_lattice

    def merge_layer(self, depth: int) -> str:
        """Name of the merge layer at ``depth`` (one shared by all depths, or one each)."""
        return f"merge.{0 if self.merge == 'shared' else depth}"

    @property
    def coefficient_sets(self) -> tuple[str, ...]:
        """Which layers each INCODE coefficient set modulates, in row order (none for SIREN)."""
        if not self.incode:
            return ()
        sets = ("local",) if self.has_local else ()
        sets += ("global",) if self.has_global else ()
        return sets + (("merge",) if self.merge_count else ())

    @property
    def depths(self) -> int:
        """Number of sine layers per branch (the first layer plus the hidden ones)."""
        return self.hidden_layers + 1

    @property
    def merge_count(self) -> int:
        """Merge layers with their own weights: none without both branches at the samples."""
        if self.base != "local-global" or self.on_lattice:
            return 0
        return 1 if self.merge == "shared" else self.depths

    def local_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of one partition's tensors, by name."""
        if not self.has_local:
            return {}
        h = self.local_width
        shapes = {}
        for d in range(self.depths):
            shapes[f"local.{d}.weight"] = (self.in_dims if d == 0 else h, h)
            shapes[f"local.{d}.bias"] = (h,)
        shapes["local.out.weight"] = (h, self.out_dims)
        shapes["local.out.bias"] = (self.out_dims,)
        return shapes

    def global_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the shared tensors (global branch, merge, SIREN output), by name."""
        shapes: dict[str, tuple[int, ...]] = {}
        if self.has_global:
            g = self.global_width
            for d in range(self.depths):
                shapes[f"global.{d}.weight"] = (self.in_dims if d == 0 else g, g)
                shapes[f"global.{d}.bias"] = (g,)
        h, g = self.local_width, self.global_width
        if self.on_lattice:
            for d in range(self.depths):
                shapes[f"merge.{d}.weight"] = (g, h)
            shapes["global.out.weight"] = (g, self.out_dims)
            shapes["global.out.bias"] = (self.out_dims,)
            return shapes
        for m in range(self.merge_count):
            rows = g if self.merge == "add" else h + g
            shapes[f"merge.{m}.weight"] = (rows, h)
            shapes[f"merge.{m}.bias"] = (h,)
        if not self.has_local:
            shapes["out.weight"] = (self.global_width, self.out_dims)
            shapes["out.bias"] = (self.out_dims,)
        return shapes

    def constant_shapes(self) -> dict[str, tuple[int, ...]]:
        """Shapes of the stored constants (INCODE's coefficients): in the global file, never
        trained as such."""
        sets = self.coefficient_sets
        return {COEFFICIENTS: (len(sets), 4)} if sets else {}

    def local_params(self) -> int:
        """Parameters of one partition's local sub-network."""
        return sum(math.prod(s) for s in self.local_shapes().values())

    def global_params(self) -> int:
        """Numbers in the global file: the shared tensors and the constants."""
        shapes = {**self.global_shapes(), **self.constant_shapes()}
        return sum(math.prod(s) for s in shapes.values())

    def total_params(self, partitions: int) -> int:
        return self.global_params() + partitions * self.local_params()

    def to_dict(self) -> dict:
        d = asdict(self)
        for name in _TUPLES:
            d[name] = list(d[name])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Architecture":
        d = dict(d)
        for name in _TUPLES:
            d[name] = tuple(d.get(name, ()))
        return cls(**d)


_TUPLES = ("coord_scale", "lattice", "grid_factors", "cell_origin", "part_size")
