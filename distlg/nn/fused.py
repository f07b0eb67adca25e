"""The fast path: forward and backward of an ``INR`` written out by hand, in cache-sized chunks.

Computes exactly what ``INR.forward`` + autograd compute (tests compare the two), but:

- w0 rides in the GEMMs' alpha/beta (``addmm(b, x, W, beta=w0, alpha=w0)`` is w0 (xW + b)), so no
  separate ``w0 * x`` pass forward or backward;
- the concat merge is two GEMMs into one output (``[l, g] Wm = l Wm_l + g Wm_g``), never a copy;
- the backward of a sine layer is ``cos`` and one multiply, both in place on the saved
  pre-activation; w0 again rides in the GEMMs that consume it;
- no gradient is computed for the input coordinates;
- forward and backward run chunk by chunk (a few partitions, or part of one, at a time), so the
  activations a chunk saves stay in cache; parameter gradients accumulate across chunks.

All functions run under ``torch.no_grad`` and write ``.grad`` themselves.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch
from torch import Tensor

from . import lattice
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


class _Local:
    """The local tensors of the partitions in one chunk: slices of the stacks, or a gather."""

    def __init__(self, model: INR, ps: slice, slots: Tensor | None):
        self.model, self.ps, self.slots = model, ps, slots

    def __call__(self, name: str) -> Tensor:
        t = self.model[name]
        if self.slots is None:
            return t[self.ps]
        return t.index_select(0, self.slots[self.ps].to(t.device))


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
        ids = model.partitions if slots is None else model.partitions.index_select(
            0, slots.to(model.partitions.device))
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


def _forward(model: INR, x: Tensor, local: _Local, tape: list | None,
             zg: Tensor | None = None) -> Tensor:
    """Output [pc, nc, out] for scaled coordinates x [pc, nc, in]; fills ``tape`` if given.

    ``zg`` [pc, nc, C] are the lattice features interpolated to the samples (merge "bias")."""
    a, w0 = model.arch, model.arch.w0
    pc, nc, _ = x.shape
    rows = pc * nc
    g, h = x.reshape(rows, a.in_dims), x
    width = a.local_width
    for d in range(a.depths):
        if a.has_global and zg is None:
            z = torch.addmm(model[f"global.{d}.bias"], g, model[f"global.{d}.weight"], beta=w0, alpha=w0)
            g_in, g = g, (torch.sin(z) if tape is not None else z.sin_())
            if tape is not None:
                tape.append((g_in, z, g))
        if a.has_local:
            z = torch.baddbmm(local(f"local.{d}.bias").unsqueeze(1), h, local(f"local.{d}.weight"),
                              beta=w0, alpha=w0)
            if zg is not None:
                z.add_(zg[..., d * width:(d + 1) * width], alpha=w0)
            h_in, l = h, (torch.sin(z) if tape is not None else z.sin_())
            if tape is not None:
                tape.append((h_in, z, l))
            h = _merge_forward(model, d, l, g, tape) if a.arch == "local-global" and zg is None else l
    if not a.has_local:
        out = torch.addmm(model["out.bias"], g, model["out.weight"]).view(pc, nc, a.out_dims)
        return out
    out = torch.baddbmm(local("local.out.bias").unsqueeze(1), h, local("local.out.weight"))
    return out if zg is None else out.add_(zg[..., a.depths * width:])


def _merge_forward(model: INR, d: int, l: Tensor, g: Tensor, tape: list | None) -> Tensor:
    a, w0 = model.arch, model.arch.w0
    m = 0 if a.merge == "shared" else d
    w, b = model[f"merge.{m}.weight"], model[f"merge.{m}.bias"]
    pc, nc, width = l.shape
    if a.merge == "add":
        z = torch.addmm(b, g, w, beta=w0, alpha=w0)
        h = (torch.sin(z) if tape is not None else z.sin_()).view(pc, nc, width).add_(l)
        if tape is not None:
            tape.append((z, h))
        return h
    z = torch.addmm(b, g, w[width:], beta=w0, alpha=w0)
    z.addmm_(l.view(pc * nc, width), w[:width], alpha=w0)
    if tape is None:
        return z.sin_().view(pc, nc, width)
    h = torch.sin(z).view(pc, nc, width)
    tape.append((z, h))
    return h


def _backward(model: INR, tape: list, dout: Tensor, local: _Local, grads: dict[str, Tensor],
              lattice_grad: Callable[[int, Tensor, float], None] | None = None) -> None:
    """Accumulate parameter gradients given dL/d(output) [pc, nc, out]; consumes the tape.

    With lattice features (merge "bias") their gradients go to ``lattice_grad``."""
    a, w0 = model.arch, model.arch.w0
    pc, nc, _ = dout.shape
    rows = pc * nc
    ps = local.ps

    def lgrad(name: str) -> Tensor:  # gradient slice of the chunk's partitions (training only)
        return grads[name][ps]

    dg = dh = None
    if a.has_local:
        h_last = tape[-1][-1]  # every tape entry ends with its layer's output
        lgrad("local.out.weight").baddbmm_(h_last.transpose(1, 2), dout)
        lgrad("local.out.bias").add_(dout.sum(1))
        dh = torch.bmm(dout, local("local.out.weight").transpose(1, 2))
    else:
        g_last = tape[-1][-1]
        d2 = dout.view(rows, a.out_dims)
        grads["out.weight"].addmm_(g_last.t(), d2)
        grads["out.bias"].add_(d2.sum(0))
        dg = torch.mm(d2, model["out.weight"].t())

    on_lattice = lattice_grad is not None
    if on_lattice:
        lattice_grad(a.depths, dout, 1.0)
    for d in reversed(range(a.depths)):
        if a.arch == "local-global" and not on_lattice:
            zm, _ = tape.pop()
            h_in, zl, l = tape.pop()
            dl, dg = _merge_backward(model, d, zm, dh, l, tape[-1][2], dg, grads)
        elif a.has_local:
            h_in, zl, l = tape.pop()
            dl = dh
        if a.has_local:
            c = zl.cos_().mul_(dl)
            if on_lattice:
                lattice_grad(d, c, w0)
            lgrad(f"local.{d}.weight").baddbmm_(h_in.transpose(1, 2), c, alpha=w0)
            lgrad(f"local.{d}.bias").add_(c.sum(1), alpha=w0)
            if d > 0:
                dh = _bmm(c, local(f"local.{d}.weight").transpose(1, 2), w0)
        if a.has_global and not on_lattice:
            g_in, zg, _ = tape.pop()
            c = zg.cos_().mul_(dg)
            grads[f"global.{d}.weight"].addmm_(g_in.t(), c, alpha=w0)
            grads[f"global.{d}.bias"].add_(c.sum(0), alpha=w0)
            dg = _mm(c, model[f"global.{d}.weight"].t(), w0) if d > 0 else None


def _merge_backward(model: INR, d: int, zm: Tensor, dh: Tensor, l: Tensor, g: Tensor,
                    dg_next: Tensor | None, grads: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """Gradients through depth d's merge: returns dL/dl_d and dL/dg_d (including dg_next)."""
    a, w0 = model.arch, model.arch.w0
    m = 0 if a.merge == "shared" else d
    w, gw, gb = model[f"merge.{m}.weight"], grads[f"merge.{m}.weight"], grads[f"merge.{m}.bias"]
    pc, nc, width = dh.shape
    dh2 = dh.reshape(pc * nc, width)
    c = zm.cos_().mul_(dh2)
    gb.add_(c.sum(0), alpha=w0)

    def dg(w_g: Tensor) -> Tensor:  # gradient into g_d: from the merge, plus from g_{d+1}
        if dg_next is None:
            return _mm(c, w_g.t(), w0)
        return torch.addmm(dg_next, c, w_g.t(), alpha=w0)

    if a.merge == "add":
        gw.addmm_(g.t(), c, alpha=w0)
        return dh, dg(w)
    gw[:width].addmm_(l.view(pc * nc, width).t(), c, alpha=w0)
    gw[width:].addmm_(g.t(), c, alpha=w0)
    return _mm(c, w[:width].t(), w0).view(pc, nc, width), dg(w[width:])


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
    sse = torch.zeros((), dtype=torch.float64, device=values.device)
    x_all = coords * model.coord_scale
    lat = _Lattice(model, coords, None, train=True) if model.arch.on_lattice else None
    for ps, ss in chunks(x_all.shape[0], x_all.shape[1], device_chunk_samples(model, values.device)):
        local = _Local(model, ps, None)
        tape: list = []
        zg = lat.features(ps, ss) if lat else None
        out = _forward(model, x_all[ps, ss].contiguous(), local, tape, zg)
        err = out.sub_(values[ps, ss])
        sse += err.pow(2).sum(dtype=torch.float64)
        _backward(model, tape, err.mul_(2.0 * scale), local, grads, lat.grad(ps, ss) if lat else None)
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
    x_all = coords * model.coord_scale
    out = torch.empty(x_all.shape[:2] + (model.arch.out_dims,), device=coords.device)
    lat = _Lattice(model, coords, slots, train=False) if model.arch.on_lattice else None
    target = device_chunk_samples(model, coords.device) or 4 * CHUNK_SAMPLES
    for ps, ss in chunks(x_all.shape[0], x_all.shape[1], target=target):
        zg = lat.features(ps, ss) if lat else None
        out[ps, ss] = _forward(model, x_all[ps, ss].contiguous(), _Local(model, ps, slots), None, zg)
    return out
