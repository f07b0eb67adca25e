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
(``distlg.nn.lattice``) instead of at every sample, and its projections enter the local layers as
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

``INR.forward`` is the one forward pass of every model (``distlg.nn.layers.forward_layers``):
the training steps run it with a matmul policy (float32, bfloat16, Triton kernels) and INCODE
coefficients as arguments, and the fused step (``distlg.nn.fused``) runs it through a tape
and backpropagates by hand.

Initialisation is SIREN's: first layers U(-1/in, 1/in), later layers U(-sqrt(6/in)/w0, ..),
biases U(-1/sqrt(in), 1/sqrt(in)). Partition p's local weights are a counter-based hash of
(seed, p, tensor, element) (``counter_uniform``: every held partition at once, no loop over
partitions) and the global weights come from a generator seeded by (seed, "global"), so they do
not depend on which other partitions a module holds. Nothing here knows about distribution.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import DistlgError
from . import lattice
from .architecture import ARCHS, COEFFICIENTS, MERGES, Architecture  # noqa: F401 - re-exported
from .layers import FP32, Activation, Matmuls, forward_layers, incode_sine  # noqa: F401 - re-exported


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


_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
INIT_BLOCK = 1 << 15
"""Partitions initialised per pass of ``init_local`` (bounds its temporary memory)."""


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser, elementwise on uint64 (wrapping arithmetic), in place."""
    x ^= x >> np.uint64(30)
    x *= _M1
    x ^= x >> np.uint64(27)
    x *= _M2
    x ^= x >> np.uint64(31)
    return x


def counter_uniform(seed: int, stream: int, pids: np.ndarray, count: int) -> np.ndarray:
    """Uniform [0, 1) numbers (float32, 24 random bits) [len(pids), count], a function of
    (seed, stream, partition id, element) alone: a counter-based hash, so a partition's numbers
    do not depend on which others are drawn with it, and all of them are drawn at once."""
    with np.errstate(over="ignore"):
        key = _mix(np.asarray([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64) * _GOLDEN + np.uint64(stream))
        rows = _mix(np.asarray(pids, dtype=np.int64).astype(np.uint64) + _GOLDEN) ^ key
        x = _mix(rows[:, None] + (np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN)[None, :])
    u = (x >> np.uint64(40)).astype(np.float32)
    u *= np.float32(2.0 ** -24)
    return u


def init_local(arch: Architecture, pids: Sequence[int], seed: int) -> dict[str, Tensor]:
    """SIREN-initialised local tensors of ``pids``, stacked [len(pids), *shape]: partition p's
    draw from (seed, p) alone, ``INIT_BLOCK`` partitions at a time."""
    pids = np.asarray(pids, dtype=np.int64)
    shapes = arch.local_shapes()
    out = {name: torch.empty((len(pids),) + shape) for name, shape in shapes.items()}
    for stream, (name, shape) in enumerate(shapes.items()):
        bound, count = _init_bound(name, shape, arch), math.prod(shape)
        flat = out[name].numpy().reshape(len(pids), count)
        for start in range(0, len(pids), INIT_BLOCK):
            block = pids[start:start + INIT_BLOCK]
            u = counter_uniform(seed, stream, block, count)
            u *= np.float32(2 * bound)
            u -= np.float32(bound)  # U(-bound, bound)
            flat[start:start + len(block)] = u
    return out


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
        ids = np.asarray(partitions, dtype=np.int64).ravel()
        if len(np.unique(ids)) != len(ids):
            raise ValueError("partition ids must be unique")
        self.register_buffer("partitions", torch.from_numpy(ids.copy()), persistent=False)
        self._slots = dict(zip(ids.tolist(), range(len(ids))))
        self.register_buffer("coord_scale", torch.tensor(arch.coord_scale, dtype=torch.float32),
                             persistent=False)
        self.params = nn.ParameterDict()
        glob = init_tensors(arch.global_shapes(), arch, _generator(seed, -1)) if init else {}
        for name, shape in arch.global_shapes().items():
            self.params[_key(name)] = nn.Parameter(glob.get(name, torch.zeros(shape)))
        if init:
            stacked = init_local(arch, ids, seed)
        else:
            stacked = {name: torch.zeros((len(ids),) + s) for name, s in arch.local_shapes().items()}
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
        if len(pids) == self.num_partitions and pids == self.partition_ids:
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

    # -- the forward pass ---------------------------------------------------------------------------
    def activation(self, coefficients: Tensor | None = None) -> Activation:
        """The sine of a forward pass: INCODE's takes ``coefficients`` or the stored ones."""
        if coefficients is None and self.arch.incode:
            coefficients = self.constant(COEFFICIENTS)
        return Activation(self.arch, coefficients)

    def weights(self, rows: slice | Tensor | None = None,
                tensors: Mapping[str, Tensor] | None = None) -> Callable[[str], Tensor]:
        """A pass's tensors by name: the shared ones whole, the local stacks at ``rows`` (a
        slice of the held partitions, or their slots on the model's device; None: all).
        ``tensors``: every tensor by name in place of the model's own (e.g. float64 copies,
        ``distlg.training.exact``)."""
        def get(name: str) -> Tensor:
            t = self[name] if tensors is None else tensors[name]
            if rows is None or not name.startswith("local."):
                return t
            return t[rows] if isinstance(rows, slice) else t.index_select(0, rows)
        return get

    def forward(self, coords: Tensor, pids: Sequence[int] | Tensor | None = None,
                coefficients: Tensor | None = None, matmuls: Matmuls = FP32,
                tensors: Mapping[str, Tensor] | None = None) -> Tensor:
        """Values at ``coords`` [P', n, in] grouped by partition; ``pids`` [P'] names the
        partition of each group (default: every held partition, in order). Returns [P', n, out].

        ``coefficients`` [sets, 4]: an INCODE model's activation coefficients (default: the
        stored ones; the harmonizer's output while training). ``matmuls``: the policy that
        computes the products (``distlg.nn.layers``: FP32, BF16, or Triton's in
        ``distlg.kernels``). ``tensors``: every tensor by name in place of the model's own,
        e.g. float64 copies with float64 ``coords`` (``distlg.training.exact``). Differentiable;
        ``distlg.nn.fused`` runs this same pass through its tape and backpropagates by hand."""
        act = self.activation(coefficients)
        slots = self.slots(pids)
        slots = None if slots is None else slots.to(self.coord_scale.device)
        lattice_bias = self.lattice_bias(coords, slots, act, tensors) if self.arch.on_lattice \
            else None
        return forward_layers(self.arch, self.weights(slots, tensors), coords * self.coord_scale,
                              matmuls, act, lattice_bias)

    def lattice_bias(self, coords: Tensor, slots: Tensor | None, act: Activation | None = None,
                     tensors: Mapping[str, Tensor] | None = None) -> Tensor:
        """The lattice merge's global features interpolated to ``coords`` [P', n, in] (raw)
        of the partitions at ``slots`` (None: all held): [P', n, C] (``lattice.interpolation``:
        a dense product, or a gather of each sample's cell corners on a fine lattice)."""
        ids = self.partitions if slots is None else self.partitions.index_select(0, slots)
        return lattice.interpolate(self.lattice_features(ids, act, tensors),
                                   lattice.interpolation(self.arch, coords, ids))

    def lattice_features(self, pids: Tensor, act: Activation | None = None,
                         tensors: Mapping[str, Tensor] | None = None) -> Tensor:
        """The global branch's projections at the lattice corners of ``pids``: [P, K, C] with
        C = depths x local width + outputs (``distlg.nn.lattice``), differentiable. Corners that
        neighbouring partitions share are evaluated once. ``act``: the pass's activation;
        ``tensors``: the shared tensors by name (default: the model's), e.g. float64 copies."""
        a = self.arch
        get = self.__getitem__ if tensors is None else tensors.__getitem__
        act = act or self.activation()
        points, inverse = self._lattice_points(pids)
        g = points.to(get("global.0.weight").dtype) * self.coord_scale
        feats = []
        for d in range(a.depths):
            g = FP32.sine(f"global.{d}", g, get, act)
            feats.append(g @ get(f"merge.{d}.weight"))
        feats.append(FP32.linear("global.out", g, get))
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


def _key(name: str) -> str:
    return name.replace(".", "__")


def _name(key: str) -> str:
    return key.replace("__", ".")


def _checked(tensors: dict[str, Tensor], name: str, shape: tuple[int, ...]) -> Tensor:
    """``tensors[name]`` if it is there with ``shape``; a one-line ``DistlgError`` for a weight
    file whose tensors were renamed, reshaped or transposed (its sha256 may still match)."""
    if name not in tensors:
        raise DistlgError(f"a weight file lacks tensor {name!r} that the architecture needs: a "
                          "foreign or altered file")
    t = tensors[name]
    if tuple(t.shape) != tuple(shape):
        raise DistlgError(f"a weight file's tensor {name!r} has shape {tuple(t.shape)}, the "
                          f"architecture needs {tuple(shape)}: a foreign or altered file")
    return t
