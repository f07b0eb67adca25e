"""The fast path: ``INR.forward``'s pass run through a tape, and its backward written by hand,
in cache-sized chunks.

The forward is the model's own (``distlg.nn.layers.forward_layers``) with the ``Tape`` policy:
float32 products as ``FP32`` computes them, sines in place, and each layer's record of what its
backward reads. ``_backward`` walks the records in reverse; it needs no rule of which layers
exist (the forward's records say). It computes exactly what autograd computes (tests compare
the two), but:

- w0 rides in the GEMMs' alpha/beta (``addmm(b, x, W, beta=w0, alpha=w0)`` is w0 (xW + b)), so no
  separate ``w0 * x`` pass forward or backward;
- the concat merge is two GEMMs into one output (``[l, g] Wm = l Wm_l + g Wm_g``), never a copy;
- the backward of a sine layer is ``cos`` and one multiply, both in place on the saved
  pre-activation; w0 again rides in the GEMMs that consume it;
- no gradient is computed for the input coordinates;
- forward and backward run chunk by chunk (a few partitions, or part of one, at a time), so the
  activations a chunk saves stay in cache; parameter gradients accumulate across chunks.

All functions run under ``torch.no_grad`` and write ``.grad`` themselves. SIREN activations
only: INCODE models train through autograd (``distlg.training.steps``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import Tensor

from . import lattice
from .layers import Activation, Matmuls, Weights, forward_layers
from .model import INR

CHUNK_SAMPLES = 2048
"""Samples per chunk and thread: about what keeps one chunk's activations in L2/L3 cache."""


def device_chunk_samples(model: INR, device: torch.device) -> int | None:
    """Samples per chunk on ``device``: None on the CPU (``CHUNK_SAMPLES`` per thread, sized
    for the caches); on a GPU as many as keep one chunk's saved activations within 1/16 of its
    memory (the whole batch, usually: one launch per layer instead of one per chunk)."""
    if device.type != "cuda":
        return None
    a = model.arch
    floats = a.depths * 3 * (a.local_width + a.global_width + a.local_width) + 4 * a.out_dims
    budget = torch.cuda.get_device_properties(device).total_memory // 16
    return max(CHUNK_SAMPLES, budget // (4 * max(1, floats)))


def chunks(groups: int, n: int, target: int | None = None) -> Iterator[tuple[slice, slice]]:
    """Cover a [groups, n] batch with (partition slice, sample slice) pieces of ~target samples."""
    target = target or CHUNK_SAMPLES * max(1, torch.get_num_threads())
    if n >= target:
        per = -(-n // -(-n // target))  # split each partition into near-equal pieces
        for p in range(groups):
            for s in range(0, n, per):
                yield slice(p, p + 1), slice(s, min(n, s + per))
    else:
        step = max(1, target // n)
        for p in range(0, groups, step):
            yield slice(p, min(groups, p + step)), slice(0, n)


def _mm(a: Tensor, b: Tensor, alpha: float) -> Tensor:
    """alpha * (a @ b) in one GEMM."""
    return torch.addmm(a.new_zeros(()), a, b, beta=0, alpha=alpha)


def _bmm(a: Tensor, b: Tensor, alpha: float) -> Tensor:
    """alpha * bmm(a, b) in one batched GEMM."""
    return torch.baddbmm(a.new_zeros(()), a, b, beta=0, alpha=alpha)


# -- the forward's records ---------------------------------------------------------------------------
@dataclass
class _Sine:
    name: str
    x: Tensor          # the layer's input
    z: Tensor          # w0 (x W + b [+ lattice features])
    y: Tensor          # sin(z)
    lattice: bool      # lattice features entered z (their gradient is wanted)


@dataclass
class _Merge:
    name: str
    z: Tensor          # w0 ([l, g] Wm + bm), or w0 (g Wm + bm) with ``add``
    l: Tensor
    g: Tensor
    add: bool


@dataclass
class _Linear:
    name: str
    x: Tensor


class Tape(Matmuls):
    """``FP32``'s products with the sines in place; with ``record`` each layer's record of what
    its backward reads (``entries``, in forward order)."""

    name = "fp32-tape"

    def __init__(self, record: bool):
        self.record = record
        self.entries: list[_Sine | _Merge | _Linear] = []

    def _sin(self, z: Tensor) -> Tensor:
        return torch.sin(z) if self.record else z.sin_()

    def sine(self, name: str, x: Tensor, weights: Weights, act: Activation,
             extra: Tensor | None = None) -> Tensor:
        w, b = weights(f"{name}.weight"), weights(f"{name}.bias")
        z = (self.grouped if x.dim() == 3 else self.dense)(x, w, b, act.w0)
        if extra is not None:
            z.add_(extra, alpha=act.w0)
        y = self._sin(z)
        if self.record:
            self.entries.append(_Sine(name, x, z, y, extra is not None))
        return y

    def merge(self, name: str, l: Tensor, g: Tensor, weights: Weights, act: Activation,
              add: bool) -> Tensor:
        w, b, w0 = weights(f"{name}.weight"), weights(f"{name}.bias"), act.w0
        shape, width = l.shape, l.shape[-1]
        if add:
            z = torch.addmm(b, g, w, beta=w0, alpha=w0)
            h = self._sin(z).view(shape).add_(l)
        else:  # [l, g] Wm as two GEMMs into one output
            z = torch.addmm(b, g, w[width:], beta=w0, alpha=w0)
            z.addmm_(l.view(-1, width), w[:width], alpha=w0)
            h = self._sin(z).view(shape)
        if self.record:
            self.entries.append(_Merge(name, z, l, g, add))
        return h

    def linear(self, name: str, x: Tensor, weights: Weights) -> Tensor:
        if self.record:
            self.entries.append(_Linear(name, x))
        return super().linear(name, x, weights)


# -- the backward ------------------------------------------------------------------------------------
class _Backward:
    """Gradients of one chunk through its tape, accumulated into ``grads`` (the local ones at
    the chunk's partitions ``ps``). Streams: "g" the global branch's activations, "h" the local
    branch's (after any merge), "l" a local layer's output before its merge."""

    def __init__(self, weights: Weights, grads: dict[str, Tensor], ps: slice,
                 lattice_grad: Callable[[int, Tensor, float], None] | None, w0: float):
        self.weights, self.grads, self.ps, self.lattice_grad, self.w0 = \
            weights, grads, ps, lattice_grad, w0
        self.d: dict[str, Tensor] = {}

    def grad(self, name: str) -> Tensor:
        g = self.grads[name]
        return g[self.ps] if name.startswith("local.") else g

    def run(self, tape: Tape, dout: Tensor) -> None:
        for entry in reversed(tape.entries):
            if isinstance(entry, _Linear):
                self.linear(entry, dout)
            elif isinstance(entry, _Merge):
                self.merge(entry)
            else:
                self.sine(entry)

    def linear(self, e: _Linear, dout: Tensor) -> None:
        w = self.weights(f"{e.name}.weight")
        if e.x.dim() == 3:  # the local output layer
            self.grad(f"{e.name}.weight").baddbmm_(e.x.transpose(1, 2), dout)
            self.grad(f"{e.name}.bias").add_(dout.sum(1))
            self.d["h"] = torch.bmm(dout, w.transpose(1, 2))
        else:  # one SIREN's output layer
            d2 = dout.view(e.x.shape[0], -1)
            self.grad(f"{e.name}.weight").addmm_(e.x.t(), d2)
            self.grad(f"{e.name}.bias").add_(d2.sum(0))
            self.d["g"] = torch.mm(d2, w.t())

    def merge(self, e: _Merge) -> None:
        w, w0 = self.weights(f"{e.name}.weight"), self.w0
        dh = self.d.pop("h")
        pc, nc, width = dh.shape
        c = e.z.cos_().mul_(dh.reshape(pc * nc, width))
        self.grad(f"{e.name}.bias").add_(c.sum(0), alpha=w0)
        gw = self.grad(f"{e.name}.weight")
        if e.add:
            gw.addmm_(e.g.t(), c, alpha=w0)
            self.d["l"], w_g = dh, w
        else:
            gw[:width].addmm_(e.l.view(pc * nc, width).t(), c, alpha=w0)
            gw[width:].addmm_(e.g.t(), c, alpha=w0)
            self.d["l"], w_g = _mm(c, w[:width].t(), w0).view(pc, nc, width), w[width:]
        dg = self.d.get("g")  # what the global layer after this depth sent back
        self.d["g"] = _mm(c, w_g.t(), w0) if dg is None else torch.addmm(dg, c, w_g.t(), alpha=w0)

    def sine(self, e: _Sine) -> None:
        w0, local = self.w0, e.x.dim() == 3
        stream = "g" if not local else ("l" if "l" in self.d else "h")
        c = e.z.cos_().mul_(self.d.pop(stream))
        if e.lattice:
            self.lattice_grad(int(e.name.split(".")[1]), c, w0)
        if local:
            self.grad(f"{e.name}.weight").baddbmm_(e.x.transpose(1, 2), c, alpha=w0)
            self.grad(f"{e.name}.bias").add_(c.sum(1), alpha=w0)
        else:
            self.grad(f"{e.name}.weight").addmm_(e.x.t(), c, alpha=w0)
            self.grad(f"{e.name}.bias").add_(c.sum(0), alpha=w0)
        if e.name.endswith(".0"):  # the first layer: no gradient for the coordinates
            return
        w = self.weights(f"{e.name}.weight")
        self.d["h" if local else "g"] = _bmm(c, w.transpose(1, 2), w0) if local else _mm(c, w.t(), w0)


# -- the lattice -------------------------------------------------------------------------------------
class _Lattice:
    """The global branch on its lattice (merge "bias"), for the partitions of one batch.

    The lattice is small (K corners per partition), so its features are computed once per
    call with autograd. A chunk interpolates them to its samples (``lattice.interpolation``: a
    batched product, or a gather of each sample's cell corners on a fine lattice); its backward
    records the features' gradients of every depth in one buffer (``grad``) and ``scatter``
    adds them to the corners; ``finish`` pushes the lattice's gradients through the global
    branch. The interpolation depends only on the coordinates, so a full-batch run (the same
    coordinate tensor every step) computes it once.
    """

    def __init__(self, model: INR, coords: Tensor, slots: Tensor | None, train: bool):
        ids = model.partitions if slots is None else model.partitions.index_select(0, slots)
        self.model = model
        with torch.enable_grad() if train else torch.no_grad():
            self.u = model.lattice_features(ids, act=None)           # [P, K, C]
        self.values = self.u.detach()
        self.how, self.weights_t = _cached_interpolation(model, coords, ids)
        self.du = torch.zeros_like(self.values) if train else None
        self.dz: Tensor | None = None
        self.chunk = (slice(0), slice(0))

    def features(self, ps: slice, ss: slice) -> Tensor:
        """Interpolated features [pc, nc, C] of a chunk's samples."""
        weights = self.how.weights[ps, ss]
        if self.how.rows is None:
            return torch.bmm(weights, self.values[ps])
        rows, flat = self.how.rows[ps, ss], self.values.view(-1, self.values.shape[-1])
        z = None
        for c in range(rows.shape[-1]):
            picked = flat.index_select(0, rows[..., c].flatten()).view(*rows.shape[:2], -1)
            z = picked.mul_(weights[..., c:c + 1]) if z is None else \
                z.addcmul_(picked, weights[..., c:c + 1])
        return z

    def grad(self, ps: slice, ss: slice) -> Callable[[int, Tensor, float], None]:
        """For a chunk: add ``alpha`` x the gradient ``dz`` [pc, nc, .] of depth d's features
        (d = depths: the output term) to the corners its samples read: a dense interpolation
        right away (one product per depth), a sparse one into a buffer that ``scatter`` then
        adds to the corners (one gather of every depth's rows per corner)."""
        width, depths = self.model.arch.local_width, self.model.arch.depths

        def columns(d: int) -> slice:
            return slice(d * width, (d + 1) * width) if d < depths else slice(depths * width, None)

        if self.how.rows is None:
            wt = self.weights_t[ps, :, ss]
            return lambda d, dz, alpha: self.du[ps, :, columns(d)].baddbmm_(wt, dz, alpha=alpha)
        self.chunk = (ps, ss)
        self.dz = self.values.new_empty(self.how.weights[ps, ss].shape[:2] + self.values.shape[-1:])
        return lambda d, dz, alpha: torch.mul(dz, alpha, out=self.dz[..., columns(d)])

    def scatter(self) -> None:
        """Add a sparse chunk's recorded feature gradients to its samples' corners."""
        if self.how.rows is None:
            return
        ps, ss = self.chunk
        rows, weights = self.how.rows[ps, ss], self.how.weights[ps, ss]
        du, dz = self.du.view(-1, self.du.shape[-1]), self.dz.view(-1, self.dz.shape[-1])
        for c in range(rows.shape[-1]):
            du.index_add_(0, rows[..., c].flatten(), dz * weights[..., c].reshape(-1, 1))

    def finish(self, grads: dict[str, Tensor]) -> None:
        names = list(self.model.arch.global_shapes())
        params = [self.model[n] for n in names]
        for name, g in zip(names, torch.autograd.grad(self.u, params, self.du)):
            grads[name].add_(g)


def _cached_interpolation(model: INR, coords: Tensor,
                          ids: Tensor) -> tuple[lattice.Interpolation, Tensor | None]:
    """The interpolation of ``coords`` (and a dense one's transposed weights, the backward's
    operand), reused while a full-batch run passes the same (unmodified) coordinate tensor for
    the held partitions every step; never while a CUDA graph is captured (a replay must compute
    it from whatever the captured tensor then holds)."""
    capturing = coords.is_cuda and torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()
    cache = model.__dict__.get("_lattice_interpolation")
    if cache is not None and cache[0] is coords and cache[1] == coords._version and cache[2] is ids \
            and not capturing:
        return cache[3]
    how = lattice.interpolation(model.arch, coords, ids)
    result = (how, how.weights.transpose(1, 2).contiguous() if how.rows is None else None)
    if ids is model.partitions and not capturing:
        model.__dict__["_lattice_interpolation"] = (coords, coords._version, ids, result)
    return result


# -- entry points ------------------------------------------------------------------------------------
@torch.no_grad()
def forward_backward(model: INR, coords: Tensor, values: Tensor, scale: float) -> Tensor:
    """Add the gradient of ``scale * sum((model(coords) - values)**2)`` to every ``.grad``.

    ``coords`` [P, n, in] and ``values`` [P, n, out] are grouped by the model's partitions, in
    the order it holds them. Returns the sum of squared errors (a float64 scalar tensor).
    SIREN activations only (``distlg.training.steps`` routes INCODE models to the autograd step).
    """
    if model.arch.incode:
        raise ValueError("the fused step writes out SIREN's activation; INCODE models train "
                         "with distlg.training.steps.autograd_forward_backward")
    grads = {}
    for name, p in model.named_tensors():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        grads[name] = p.grad
    a, act = model.arch, model.activation()
    sse = torch.zeros((), dtype=torch.float64, device=values.device)
    x_all = coords * model.coord_scale
    lat = _Lattice(model, coords, None, train=True) if a.on_lattice else None
    for ps, ss in chunks(x_all.shape[0], x_all.shape[1], device_chunk_samples(model, values.device)):
        tape, weights = Tape(record=True), model.weights(ps)
        features = lat.features(ps, ss) if lat else None
        out = forward_layers(a, weights, x_all[ps, ss].contiguous(), tape, act, features)
        err = out.sub_(values[ps, ss])
        sse += err.pow(2).sum(dtype=torch.float64)
        dout = err.mul_(2.0 * scale)
        lattice_grad = lat.grad(ps, ss) if lat else None
        if lattice_grad is not None:
            lattice_grad(a.depths, dout, 1.0)  # the output term
        _Backward(weights, grads, ps, lattice_grad, a.w0).run(tape, dout)
        if lat:
            lat.scatter()
    if lat:
        lat.finish(grads)
    return sse


@torch.no_grad()
def predict(model: INR, coords: Tensor, pids=None) -> Tensor:
    """Model values at ``coords`` [P', n, in] grouped by ``pids`` (default: all held, in order).
    INCODE models (whose activation this path does not write out) take ``INR.forward``."""
    if model.arch.incode:
        return model(coords, pids)
    slots = model.slots(pids)
    slots = None if slots is None else slots.to(coords.device)
    a, act = model.arch, model.activation()
    x_all = coords * model.coord_scale
    out = torch.empty(x_all.shape[:2] + (a.out_dims,), device=coords.device)
    lat = _Lattice(model, coords, slots, train=False) if a.on_lattice else None
    target = device_chunk_samples(model, coords.device) or 4 * CHUNK_SAMPLES
    for ps, ss in chunks(x_all.shape[0], x_all.shape[1], target=target):
        features = lat.features(ps, ss) if lat else None
        weights = model.weights(ps if slots is None else slots[ps])
        out[ps, ss] = forward_layers(a, weights, x_all[ps, ss].contiguous(), Tape(record=False),
                                     act, features)
    return out
