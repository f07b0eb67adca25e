"""Local-Global SIREN and its two baselines, as one module.

Notation (one coordinate x, depth d = 0..L, L = ``hidden_layers``, w0 = 30):

    global branch   g_d = sin(w0 (g_{d-1} Wg_d + bg_d)),          g_{-1} = x
    local branch    l_d = sin(w0 (h_{d-1} Wl_d[p] + bl_d[p])),   h_{-1} = x
    merge           h_d = sin(w0 ([l_d, g_d] Wm + bm))            (Local-Global only)
    output          y   = h_L Wo[p] + bo[p]

``p`` is the partition that owns x. The local weights of all partitions a module holds are
stacked, ``[P, in, out]``, so every local layer is one batched matmul. ``arch`` selects:

- ``local-global``: both branches and the merge (one merge shared by all depths as in the
  paper's code; ``merge="per-depth"`` gives each depth its own; ``merge="add"`` instead adds a
  per-depth sine projection of g_d to l_d; ``merge="bias"`` is distlg's default, below);
- ``per-partition``: the local branch alone, h_d = l_d (the KiloNeRF-style baseline);
- ``siren``: the global branch alone with a linear output layer (one MLP for the signal).

With ``merge="bias"`` the global branch runs on a coarse lattice of points per partition
(``distlg.lattice``) instead of at every sample, and its projections enter the local layers as
a position-dependent bias:

    l_d = sin(w0 (l_{d-1} Wl_d[p] + bl_d[p] + Z_d(x)))     y = l_L Wo[p] + bo[p] + Z_out(x)

where Z_d, Z_out interpolate g_d M_d and g_L Wgo + bgo from the lattice. Per sample that costs
one small product per partition, whatever the global width, so the cost per sample does not
grow with the signal.

INCODE architectures (``Architecture.incode``) replace each sine layer's sin(w0 z) by

    exp(a) sin(exp(b) w0 z + c) + d

with the (a, b, c, d) of the layer's set (``Architecture.coefficient_sets``): rows of the
``coefficients`` argument while training (the harmonizer's output, differentiable), else of the
stored buffer ``incode.coefficients``. a = b = c = d = 0 is SIREN's activation.

Initialisation is SIREN's: first layers U(-1/in, 1/in), later layers U(-sqrt(6/in)/w0, ..),
biases U(-1/sqrt(in), 1/sqrt(in)). Partition p's local weights are drawn from a generator seeded
by (seed, p) alone and the global weights from (seed, "global"), so they do not depend on which
other partitions a module holds. Nothing here knows about distribution.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from . import lattice
from .architecture import ARCHS, COEFFICIENTS, MERGES, Architecture  # noqa: F401 - re-exported


def incode_sine(z: Tensor, coefficients: Tensor, w0: float) -> Tensor:
    """INCODE's activation exp(a) sin(exp(b) w0 z + c) + d; ``coefficients`` = (a, b, c, d)."""
    a, b, c, d = coefficients.unbind(-1)
    return torch.exp(a) * torch.sin(torch.exp(b) * (w0 * z) + c) + d


class Activation:
    """The sine of one forward pass: SIREN's sin(w0 z), or INCODE's with per-set coefficients."""

    def __init__(self, arch: Architecture, coefficients: Tensor | None):
        self.w0, self.sets = arch.w0, arch.coefficient_sets
        self.coefficients = coefficients

    def __call__(self, z: Tensor, layers: str) -> Tensor:
        if not self.sets:
            return torch.sin(self.w0 * z)
        return incode_sine(z, self.coefficients[self.sets.index(layers)], self.w0)


# -- initialisation ------------------------------------------------------------------------------
def _generator(seed: int, stream: int) -> torch.Generator:
    """An independent generator for (seed, stream); stream -1 is the global branch."""
    state = np.random.SeedSequence([seed & 0xFFFFFFFF, stream + 1]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _fan_in(name: str, shape: tuple[int, ...], arch: Architecture) -> int:
    if name.endswith(".bias"):
        # bias bound follows its layer's fan-in, which sits in the weight's first dim
        return _weight_shape(name, arch)[0]
    return shape[0]


def _weight_shape(bias_name: str, arch: Architecture) -> tuple[int, ...]:
    shapes = {**arch.local_shapes(), **arch.global_shapes()}
    return shapes[bias_name[: -len(".bias")] + ".weight"]


def _init_bound(name: str, shape: tuple[int, ...], arch: Architecture) -> float:
    fan_in = _fan_in(name, shape, arch)
    if name.startswith("global.out."):
        return 0.0  # the lattice's output term starts at zero: the local nets start as SIREN's
    if name.endswith(".bias"):
        return 1.0 / math.sqrt(fan_in)
    if name in ("local.0.weight", "global.0.weight"):
        return 1.0 / fan_in
    return math.sqrt(6.0 / fan_in) / arch.w0


def init_tensors(shapes: dict[str, tuple[int, ...]], arch: Architecture,
                 generator: torch.Generator) -> dict[str, Tensor]:
    """SIREN-initialised tensors for ``shapes``, drawn in a fixed order from ``generator``."""
    out = {}
    for name, shape in shapes.items():
        bound = _init_bound(name, shape, arch)
        out[name] = (torch.rand(shape, generator=generator) * 2 - 1) * bound
    return out


# -- the module ----------------------------------------------------------------------------------
class INR(nn.Module):
    """A Local-Global SIREN (or baseline) holding the local sub-networks of ``partitions``.

    Local tensors are stacked over the held partitions in the order given; ``slot(pid)`` tells
    where a partition sits. The global tensors are always complete.
    """

    def __init__(self, arch: Architecture, partitions: Sequence[int] = (0,), seed: int = 0,
                 init: bool = True):
        super().__init__()
        self.arch = arch
        ids = [int(p) for p in partitions]
        if len(set(ids)) != len(ids):
            raise ValueError("partition ids must be unique")
        self.register_buffer("partitions", torch.tensor(ids, dtype=torch.long), persistent=False)
        self._slots = {p: i for i, p in enumerate(ids)}
        self.register_buffer("coord_scale", torch.tensor(arch.coord_scale, dtype=torch.float32),
                             persistent=False)
        self.params = nn.ParameterDict()
        glob = init_tensors(arch.global_shapes(), arch, _generator(seed, -1)) if init else {}
        for name, shape in arch.global_shapes().items():
            self.params[_key(name)] = nn.Parameter(glob.get(name, torch.zeros(shape)))
        local_shapes = arch.local_shapes()
        stacked = {name: torch.zeros((len(ids),) + shape) for name, shape in local_shapes.items()}
        if init:
            for slot, pid in enumerate(ids):
                for name, t in init_tensors(local_shapes, arch, _generator(seed, pid)).items():
                    stacked[name][slot] = t
        for name, t in stacked.items():
            self.params[_key(name)] = nn.Parameter(t)
        for name, shape in arch.constant_shapes().items():
            self.register_buffer(_key(name), torch.zeros(shape))
        if arch.on_lattice:  # the held partitions' distinct corners, found once, here (host work)
            points, inverse = lattice.unique_points(arch, self.partitions)
            self.register_buffer("lattice_points", points, persistent=False)
            self.register_buffer("lattice_inverse", inverse, persistent=False)
        self.harmonizer: nn.Module | None = None  # INCODE in training: ``attach_harmonizer``

    # -- access by name ----------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Tensor:
        return self.params[_key(name)]

    def named_tensors(self) -> Iterable[tuple[str, nn.Parameter]]:
        for key, p in self.params.items():
            yield _name(key), p

    def global_parameters(self) -> list[nn.Parameter]:
        """The replicated parameters: the shared tensors, and an attached harmonizer's."""
        extra = list(self.harmonizer.parameters()) if self.harmonizer is not None else []
        return self.shared_parameters() + extra

    def shared_parameters(self) -> list[nn.Parameter]:
        """The shared tensors (global branch, merge, lattice), without any harmonizer."""
        return [self[n] for n in self.arch.global_shapes()]

    def attach_harmonizer(self, harmonizer: nn.Module) -> None:
        """Train an INCODE model's coefficients through ``harmonizer`` (``distlg.nn.incode``):
        its parameters join the replicated ones; ``store_coefficients`` keeps its output."""
        self.harmonizer = harmonizer

    @torch.no_grad()
    def store_coefficients(self) -> None:
        """Set the stored coefficients to the attached harmonizer's current output (what a
        model directory keeps); nothing without one."""
        if self.harmonizer is not None:
            self.constant(COEFFICIENTS).copy_(self.harmonizer())

    def local_parameters(self) -> list[nn.Parameter]:
        return [self[n] for n in self.arch.local_shapes()]

    @property
    def num_partitions(self) -> int:
        return len(self._slots)

    @property
    def partition_ids(self) -> list[int]:
        return list(self._slots)

    def slot(self, pid: int) -> int:
        try:
            return self._slots[int(pid)]
        except KeyError:
            raise KeyError(f"partition {pid} is not held by this model") from None

    def slots(self, pids: Sequence[int] | Tensor | None) -> Tensor | None:
        """Slots of ``pids``, or None when they are exactly the held partitions in order."""
        if pids is None:
            return None
        pids = [int(p) for p in (pids.tolist() if isinstance(pids, Tensor) else pids)]
        if pids == self.partition_ids:
            return None
        return torch.tensor([self.slot(p) for p in pids], dtype=torch.long)

    def local_state(self, pid: int) -> dict[str, Tensor]:
        """Partition ``pid``'s local tensors (views into the stacks)."""
        s = self.slot(pid)
        return {n: self[n].detach()[s] for n in self.arch.local_shapes()}

    def constant(self, name: str) -> Tensor:
        """A stored constant (``Architecture.constant_shapes``), e.g. INCODE's coefficients."""
        return getattr(self, _key(name))

    def global_state(self) -> dict[str, Tensor]:
        """The shared tensors and the stored constants: what the global file holds."""
        state = {n: self[n].detach() for n in self.arch.global_shapes()}
        return state | {n: self.constant(n) for n in self.arch.constant_shapes()}

    @torch.no_grad()
    def load_local(self, pid: int, tensors: dict[str, Tensor]) -> None:
        s = self.slot(pid)
        for n, shape in self.arch.local_shapes().items():
            self[n][s].copy_(_checked(tensors, n, shape))

    @torch.no_grad()
    def load_global(self, tensors: dict[str, Tensor]) -> None:
        for n, shape in self.arch.global_shapes().items():
            self[n].copy_(_checked(tensors, n, shape))
        for n, shape in self.arch.constant_shapes().items():
            self.constant(n).copy_(_checked(tensors, n, shape))

    # -- reference forward (autograd) -------------------------------------------------------------
    def activation(self, coefficients: Tensor | None = None) -> Activation:
        """The sine of a forward pass: INCODE's takes ``coefficients`` or the stored ones."""
        if coefficients is None and self.arch.incode:
            coefficients = self.constant(COEFFICIENTS)
        return Activation(self.arch, coefficients)

    def forward(self, coords: Tensor, pids: Sequence[int] | Tensor | None = None,
                coefficients: Tensor | None = None) -> Tensor:
        """Values at ``coords`` [P', n, in] grouped by partition; ``pids`` [P'] names the
        partition of each group (default: every held partition, in order). Returns [P', n, out].
        ``coefficients`` [sets, 4]: an INCODE model's activation coefficients (default: stored).

        This is the plain autograd formulation; ``distlg.nn.fused`` computes the same thing faster.
        """
        a = self.arch
        act = self.activation(coefficients)
        slots = self.slots(pids)
        x = coords * self.coord_scale
        groups, n = x.shape[0], x.shape[1]

        def local(name: str) -> Tensor:
            t = self[name]
            return t if slots is None else t.index_select(0, slots)

        if a.on_lattice:
            ids = self.partitions if slots is None else self.partitions.index_select(0, slots)
            z = lattice.interpolate(self.lattice_features(ids, act),
                                    lattice.interpolation(a, coords, ids))
            h, width = x, a.local_width
            for d in range(a.depths):
                pre = torch.bmm(h, local(f"local.{d}.weight")) + local(f"local.{d}.bias").unsqueeze(1)
                h = act(pre + z[..., d * width:(d + 1) * width], "local")
            out = torch.bmm(h, local("local.out.weight")) + local("local.out.bias").unsqueeze(1)
            return out + z[..., a.depths * width:]

        g = x.reshape(groups * n, a.in_dims)
        h = x
        for d in range(a.depths):
            if a.has_global:
                g = act(g @ self[f"global.{d}.weight"] + self[f"global.{d}.bias"], "global")
            if a.has_local:
                l = act(torch.bmm(h, local(f"local.{d}.weight"))
                        + local(f"local.{d}.bias").unsqueeze(1), "local")
                h = self._merge(l, g, d, groups, n, act) if a.merge_count else l
        if not a.has_local:
            return (g @ self["out.weight"] + self["out.bias"]).reshape(groups, n, a.out_dims)
        return torch.bmm(h, local("local.out.weight")) + local("local.out.bias").unsqueeze(1)

    def lattice_features(self, pids: Tensor, act: Activation | None = None,
                         tensors: Mapping[str, Tensor] | None = None) -> Tensor:
        """The global branch's projections at the lattice corners of ``pids``: [P, K, C] with
        C = depths x local width + outputs (``distlg.lattice``), differentiable. Corners that
        neighbouring partitions share are evaluated once. ``act``: the pass's activation;
        ``tensors``: the shared tensors by name (default: the model's), e.g. float64 copies."""
        a, t = self.arch, tensors if tensors is not None else self
        act = act or self.activation()
        points, inverse = self._lattice_points(pids)
        g = points.to(t["global.0.weight"].dtype) * self.coord_scale
        feats = []
        for d in range(a.depths):
            g = act(g @ t[f"global.{d}.weight"] + t[f"global.{d}.bias"], "global")
            feats.append(g @ t[f"merge.{d}.weight"])
        feats.append(g @ t["global.out.weight"] + t["global.out.bias"])
        per_corner = torch.cat(feats, dim=1).index_select(0, inverse)
        return per_corner.view(len(pids), -1, per_corner.shape[1])

    def _lattice_points(self, pids: Tensor) -> tuple[Tensor, Tensor]:
        """Distinct lattice points of ``pids`` and each corner's row among them: for the held
        partitions the buffers found at construction (a training step reads nothing from the
        host), for others found now."""
        if pids is self.partitions:
            return self.lattice_points, self.lattice_inverse
        points, inverse = lattice.unique_points(self.arch, pids.cpu())
        return points.to(self.coord_scale.device), inverse.to(self.coord_scale.device)

    def _merge(self, l: Tensor, g: Tensor, d: int, groups: int, n: int,
               act: Activation) -> Tensor:
        a = self.arch
        m = 0 if a.merge == "shared" else d
        w, b = self[f"merge.{m}.weight"], self[f"merge.{m}.bias"]
        if a.merge == "add":
            return l + act(g @ w + b, "merge").reshape(groups, n, -1)
        lg = torch.cat([l.reshape(groups * n, -1), g], dim=1)
        return act(lg @ w + b, "merge").reshape(groups, n, -1)


def _key(name: str) -> str:
    return name.replace(".", "__")


def _name(key: str) -> str:
    return key.replace("__", ".")


def _checked(tensors: dict[str, Tensor], name: str, shape: tuple[int, ...]) -> Tensor:
    if name not in tensors:
        raise KeyError(f"tensor {name!r} is missing")
    t = tensors[name]
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"tensor {name!r} has shape {tuple(t.shape)}, expected {tuple(shape)}")
    return t
