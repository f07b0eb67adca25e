"""Measurement operators in the loss: learning a signal from measurements of it.

Two stores hold measurements rather than samples of the signal to learn (``distlg.data.degrade``
writes them), and training on them runs the same loop as any other run (``optim.run_steps``)
with another step:

- **Footprint averages** (super-resolution): each sample of a store ingested with
  ``--downsample F`` is the mean of an F x F block of the original. The step evaluates the
  model at the F x F sub-positions of each sample's footprint (the positions ``render --scale
  F`` evaluates) and compares their mean with the sample, so the model learns the image whose
  area averages the store holds, not the blurred one its samples would be as point values.
  Every sample is its own measurement: the batch, the workers and the gradients are those of
  plain training.
- **Projections** (CT): a store ingested with ``--ct-angles`` holds an image's parallel-beam
  sinogram beside the image, and training learns the *image*. Each step every worker renders
  its own partitions' pixels, places them in an otherwise empty image, and projects that with
  a differentiable Radon transform: the image is rotated to every angle with
  ``torch.nn.functional.grid_sample`` (bilinear, zero outside) and summed along the rays. The
  transform is linear, so the workers' partial sinograms add up to the sinogram of the whole
  image: one all-reduce through ``World`` sums them, every worker takes the residual against
  the measured sinogram and backpropagates it through its own part alone. The loss is the mean
  squared error over the sinogram, so N workers compute what one process computes.

The operator reproduces ``skimage.transform.radon(image, theta, circle=False)`` (the test
compares them): the image padded to its diagonal, rotated about pixel ``size // 2`` of the
padded frame, projected onto its columns. Costs per step: angles x diagonal^2 bilinear samples,
forward and backward (90 angles of a 256^2 image: 12 M), and an all-reduce of the sinogram
(diagonal x angles floats, 130 KB there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import TrainConfig
from ..data.draws import Batch
from ..data.signal import Signal
from ..errors import DistlgError
from ..geometry import PartitionGrid
from ..metrics import Evaluation, psnr
from ..nn.architecture import ARCHS
from .distributed import World
from .plan import Plan
from .steps import ensure_grads, matmuls

SUPPORTED_ARCHS = {"footprint": ARCHS, "radon": ARCHS}
"""Architectures each measured step runs (``INR.forward`` under autograd). An INCODE
model's harmonizer reads the measurements themselves (``harmonizer_input``)."""


class MeasurementError(DistlgError):
    """A store's measurements that cannot be trained on as asked."""


class Radon:
    """Parallel-beam projections of an n x n image at ``angles`` (degrees): [detectors, angles],
    the image centred in a square frame of ``detectors`` (default: its diagonal)."""

    def __init__(self, n: int, angles: np.ndarray, device: torch.device,
                 detectors: int | None = None):
        pad = math.ceil(math.sqrt(2) * n - n) if detectors is None else detectors - n
        self.detectors = n + pad
        before = (n + pad) // 2 - n // 2            # where the image starts in the padded frame
        centre = self.detectors // 2
        k = torch.arange(self.detectors, dtype=torch.float64) - centre
        theta = torch.deg2rad(torch.as_tensor(np.asarray(angles, dtype=np.float64)))
        cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
        rows, cols = k[None, :, None], k[None, None, :]          # [1, ray, detector]
        x = centre + cos * cols + sin * rows - before              # image column sampled
        y = centre - sin * cols + cos * rows - before              # image row sampled
        scale = 2.0 / max(n - 1, 1)
        grid = torch.stack([x * scale - 1, y * scale - 1], dim=-1)  # [angles, ray, detector, 2]
        self.angles = len(theta)
        self.grid = grid.reshape(1, -1, self.detectors, 2).to(device, torch.float32)

    def __call__(self, image: Tensor) -> Tensor:
        """The sinogram of ``image`` [n, n], float32 [detectors, angles]; differentiable."""
        rotated = F.grid_sample(image[None, None], self.grid, mode="bilinear",
                                padding_mode="zeros", align_corners=True)
        return rotated.view(self.angles, self.detectors, self.detectors).sum(dim=1).T


def operator(signal: Signal) -> str | None:
    """The measurement operator of a store: "radon" (a CT store), "footprint" (a store
    ingested with --downsample), or None for a store of plain samples."""
    if signal.info.measurement is not None:
        return signal.info.measurement.operator
    return "footprint" if signal.info.downsample > 1 else None


def harmonizer_input(signal: Signal, bounds: tuple[int, int]) -> Tensor | None:
    """What an INCODE model's harmonizer reads on a CT store: the measured sinogram, strided to
    at most ``bounds`` and scaled to [-1, 1], laid out as a one-channel image [1, 1, detectors,
    angles] (never the store's image: that is the reference the reconstruction is scored
    against). None for other stores: a --downsample store's samples are its measurements."""
    if operator(signal) != "radon":
        return None
    from ..nn.incode import preview_steps

    sino = load_sinogram(signal)
    rows, columns = preview_steps(sino.shape, bounds)
    sino = sino[::rows, ::columns]
    peak = float(np.abs(sino).max()) or 1.0
    return torch.from_numpy(np.ascontiguousarray(sino / peak * 2 - 1, dtype=np.float32))[None, None]


def load_sinogram(signal: Signal) -> np.ndarray:
    """The sinogram a CT store holds beside its image (float32 [detectors, angles])."""
    import zarr

    path = Path(signal.info.store or "") / signal.info.measurement.array
    try:
        return np.asarray(zarr.open_array(store=str(path), mode="r")[:], dtype=np.float32)
    except Exception as exc:  # missing or damaged: one line naming it
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise MeasurementError(f"{path}: cannot read the store's sinogram ({reason}); ingest "
                               "the store again with --ct-angles (CT stores are read locally)") from None


@dataclass
class FullGrid:
    """The 'sampler' of a measured run: every pixel of each held partition, every step (the
    values come from the measurements, not from here)."""

    coords: Tensor
    """[P_r, n, 2] coordinates of each partition's box (padding clamped into the image)."""
    mode: str = "measured"

    def batch(self, step: int) -> Batch:
        return Batch(self.coords, self.coords[..., :1])

    def close(self) -> None:
        pass


def _pixels(grid: PartitionGrid, pids: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Coordinates [P, n, 2] of each partition's box, its flat pixel index [P, n], and which
    entries are real pixels (not padding) [P, n]."""
    starts = np.asarray([[a for a, _ in grid.box(p)] for p in pids])
    offsets = np.stack(np.unravel_index(np.arange(math.prod(grid.part_shape)), grid.part_shape), -1)
    positions = starts[:, None, :] + offsets[None]
    real = (positions < np.asarray(grid.shape)).all(-1)
    clamped = grid.clamp(positions)
    index = np.ravel_multi_index(tuple(np.moveaxis(clamped, -1, 0)), grid.shape)
    return grid.normalise(clamped), index, real


def prepare(signal: Signal, plan: Plan, pids: list[int], world: World, train: TrainConfig,
            sampler, scale: float, coefficients: Callable[[], Tensor] | None = None):
    """(sampler, step, loss scale) of a run on a store of measurements, given those of a run
    on plain samples (``coefficients``: an INCODE model's, computed each step): the hook
    ``train`` calls when ``operator(signal)`` is not None."""
    kind = operator(signal)
    if kind not in SUPPORTED_ARCHS:
        raise MeasurementError(f"unknown measurement operator {kind!r} in the store")
    if plan.arch.arch not in SUPPORTED_ARCHS[kind]:
        what = "a CT store" if kind == "radon" else "a --downsample store"
        raise MeasurementError(f"--arch {plan.arch.arch} cannot train on {what}; use one of "
                               f"{', '.join(SUPPORTED_ARCHS[kind])}")
    if kind == "footprint":
        return sampler, footprint_step(plan.grid, signal.info.downsample, train, coefficients), scale
    sampler.close()
    return _radon_run(signal, plan, pids, world, train, coefficients)


def footprint_offsets(grid: PartitionGrid, factor: int) -> Tensor:
    """Coordinate offsets of the ``factor``^d sub-positions of a sample's footprint, [k, d]:
    ``-1/2 + (j + 1/2) / factor`` samples per axis, the render grid's positions at that scale."""
    steps = (np.arange(factor) + 0.5) / factor - 0.5
    mesh = np.stack(np.meshgrid(*[steps] * grid.ndim, indexing="ij"), -1).reshape(-1, grid.ndim)
    unit = 2.0 / np.maximum(np.asarray(grid.extent, dtype=np.float64) - 1, 1)
    return torch.from_numpy((mesh * unit).astype(np.float32))


def score_offsets(signal: Signal, grid: PartitionGrid) -> np.ndarray | None:
    """Where the trainer's score evaluates the model around each position: over a --downsample
    store's footprints (its samples are block means, and training fits the model's means; its
    point values would count the content inside the blocks as error), else None."""
    if operator(signal) != "footprint":
        return None
    return footprint_offsets(grid, signal.info.downsample).numpy()


def footprint_step(grid: PartitionGrid, factor: int, train: TrainConfig,
                   coefficients: Callable[[], Tensor] | None = None):
    """The step of a --downsample store: each sample compared with the mean of the model over
    its footprint."""
    offsets, policy = footprint_offsets(grid, factor), matmuls(train.precision, train.kernel)

    def step(model, coords: Tensor, values: Tensor, scale: float) -> Tensor:
        ensure_grads(model)
        groups, n, dims = coords.shape
        sub = (coords[:, :, None, :] + offsets.to(coords.device)).reshape(groups, -1, dims)
        with torch.enable_grad():
            c = coefficients() if coefficients is not None else None
            out = model(sub, coefficients=c, matmuls=policy)
            err = out.view(groups, n, len(offsets), -1).mean(dim=2) - values
            sse = err.pow(2).sum(dtype=torch.float64)
            torch.autograd.backward(err.pow(2).sum().mul(scale))
        return sse.detach()

    return step


def references(signal: Signal) -> bool:
    """Whether the store's image is the truth (the trainer scores it) or, for a measured
    sinogram (ingest --sinogram), only a back-projection (the trainer scores the projections)."""
    return operator(signal) != "radon" or signal.info.measurement.reference


class Projector:
    """What a CT run projects: each held partition's pixels placed in an empty image and
    projected; ``project`` gives this worker's partial sinogram, ``measured`` the store's."""

    def __init__(self, signal: Signal, plan: Plan, pids: list[int], world: World):
        if signal.channels != 1 or len(set(signal.shape)) != 1 or len(signal.shape) != 2:
            raise MeasurementError("a CT store holds a square single-channel image")
        desc = signal.info.measurement
        self.n, device = signal.shape[0], world.device
        self.measured = torch.from_numpy(load_sinogram(signal)).to(device)
        detectors, angles = self.measured.shape
        if detectors < self.n or angles != len(desc.angles):
            raise MeasurementError(f"the store's sinogram has shape {tuple(self.measured.shape)}, "
                                   f"not (>= {self.n}, {len(desc.angles)}); ingest it again")
        self.radon = Radon(self.n, np.asarray(desc.angles), device, detectors)
        coords, index, real = _pixels(plan.grid, pids)
        self.coords = torch.from_numpy(coords).to(device)
        self.index = torch.from_numpy(index[real]).to(device)
        self.real = torch.from_numpy(real).to(device)
        self.value_range, self.device = signal.value_range, device

    def project(self, out: Tensor) -> Tensor:
        """The partial sinogram of the model's values ``out`` [P, n] at ``coords``."""
        lo, hi = self.value_range
        raw = (out[self.real] + 1) * ((hi - lo) / 2) + lo
        image = torch.zeros(self.n * self.n, device=self.device).scatter(0, self.index, raw)
        return self.radon(image.view(self.n, self.n))


def _radon_run(signal: Signal, plan: Plan, pids: list[int], world: World, train: TrainConfig,
               coefficients: Callable[[], Tensor] | None = None):
    projector = Projector(signal, plan, pids, world)
    measured = projector.measured
    scale, policy = 1.0 / measured.numel(), matmuls(train.precision, train.kernel)

    def step(model, coords: Tensor, values: Tensor, _scale: float) -> Tensor:
        """Add the gradient of the sinogram's mean squared error to every ``.grad``; return
        the summed squared error (on the main worker; 0 elsewhere, so the trainer's sum over
        workers is the error once)."""
        ensure_grads(model)
        with torch.enable_grad():
            c = coefficients() if coefficients is not None else None
            out = model(coords, coefficients=c, matmuls=policy)[..., 0]
            partial = projector.project(out)
            residual = world.all_reduce_(partial.detach().clone()) - measured
            partial.backward(residual * (2 * scale))
        sse = residual.pow(2).sum(dtype=torch.float64)
        return sse if world.is_main else torch.zeros_like(sse)

    sampler = FullGrid(projector.coords, f"measured (radon, {projector.radon.angles} angles)")
    return sampler, step, scale


@torch.no_grad()
def evaluate_projections(model, signal: Signal, plan: Plan, world: World) -> Evaluation:
    """Score a model of a measured sinogram (no reference image): its projections against
    the sinogram, PSNR with the sinogram's range as the peak."""
    projector = Projector(signal, plan, model.partition_ids, world)
    out = model(projector.coords)[..., 0]
    residual = world.all_reduce_(projector.project(out)) - projector.measured
    mse = float(residual.pow(2).mean(dtype=torch.float64))
    peak = float(projector.measured.max() - projector.measured.min()) or 1.0
    return Evaluation(mse, psnr(mse, peak))
