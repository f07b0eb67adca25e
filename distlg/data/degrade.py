"""What ingest can do to a signal before it is stored, for the Local-Global paper's downstream
tasks: a low-resolution copy (super-resolution), a noisy copy (denoising), or the parallel-beam
sinogram an image would give in a CT scanner (reconstruction).

- ``--downsample F`` averages each F x F block of pixels (area averaging: a box filter that
  integrates every pixel's footprint exactly, the anti-aliasing a camera's sensor does); on
  video, volumes and audio each block of F samples along every axis (F^3 for a video: frames
  too, its frame rate divided by F; F samples of audio, its sample rate divided by F). The
  low-resolution sample i sits at the centre of the block it averages, so a model trained on it
  and rendered at ``--scale F`` lines up with the original sample for sample (the render grid
  tiles a sample's footprint; ``rendering.region.RenderGrid``).
- ``--noise gaussian:SIGMA`` adds N(0, SIGMA^2) on the [0, 1] scale; ``--noise poisson:PEAK``
  draws Poisson(PEAK x) / PEAK (photon counts at a peak of PEAK). Values are clipped to the
  source's value range and stored as float32 in its units, so the clean store and the noisy one
  normalise alike and ``render --compare CLEAN`` scores against the clean signal.

- ``--ct-angles N`` keeps the image (the reference a reconstruction is scored against) and
  writes, beside it in the store, its sinogram at N angles evenly spread over [0, 180) degrees:
  ``skimage.transform.radon`` with ``circle=False`` (the image padded to its diagonal, so every
  pixel is seen at every angle). ``distlg train`` then learns the image from the sinogram
  (``distlg.training.measured``).
- ``--sinogram`` takes the source as a measured sinogram [detectors, angles] (angles evenly
  over [0, 180), as many as its columns; ``--ct-angles`` may state the count) and stores it
  with, as the image, its filtered back-projection on the largest n x n grid whose diagonal
  the detectors span (n = floor(detectors / sqrt 2), scikit-image's geometry): a starting
  view and the value range, not a reference. Training learns the image from the sinogram and
  scores the projections.

Images are read whole (they fit in memory). Video, volumes and audio stream a slab at a time:
the noise at each position comes from a counter-based generator at that position (``uniforms``),
so an interrupted ingest resumes with the same values; a float source, and audio, is read once
more first, for the value range the noise is scaled by (the range its clean ingest records).

Each records what it did in the store's ``meta``. Nothing here imports torch.
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np

from .signal import default_range
from .sources.base import IngestError, Source, array_source

NOISE_KINDS = ("gaussian", "poisson")
SINOGRAM = "sinogram"
"""Name of the sinogram's Zarr array inside a CT store's folder."""


def parse_noise(text: str) -> tuple[str, float]:
    """``gaussian:0.1`` -> ("gaussian", 0.1); one-line errors for anything else."""
    kind, _, level = text.partition(":")
    if kind not in NOISE_KINDS:
        raise IngestError(f"--noise {text}: unknown noise kind {kind!r}; use gaussian:SIGMA "
                          "(on the [0, 1] scale) or poisson:PEAK")
    try:
        value = float(level)
    except ValueError:
        raise IngestError(f"--noise {text}: the level must be a number, e.g. {kind}:0.1") from None
    if not np.isfinite(value) or value <= 0:
        raise IngestError(f"--noise {text}: the level must be a positive number")
    return kind, value


def check(downsample: int | None, noise: str | None, ct_angles: int | None,
          measured: bool = False) -> None:
    """Refuse combinations before anything is read."""
    if measured and (noise or downsample):
        raise IngestError("--sinogram stores a measured sinogram as it is; ingest it without "
                          "--noise and --downsample")
    if downsample is not None and (downsample != int(downsample) or downsample < 1):
        raise IngestError(f"--downsample {downsample}: give a positive integer factor")
    if noise is not None:
        parse_noise(noise)
    if ct_angles is not None and ct_angles < 1:
        raise IngestError(f"--ct-angles {ct_angles}: give a positive number of angles")
    if ct_angles is not None and (noise or downsample) and not measured:
        raise IngestError("--ct-angles takes the image as it is; ingest it without --noise and "
                          "--downsample")


def apply(src: Source, downsample: int | None, noise: str | None, noise_seed: int,
          ct_angles: int | None, measured: bool = False) -> Source:
    """``src`` downsampled, made noisy or given a sinogram (images only), the store of a
    measured sinogram (``measured``), or ``src`` itself."""
    if measured:
        return _measured(src, ct_angles)
    if downsample is None and noise is None and ct_angles is None:
        return src
    if src.kind != "image":
        if ct_angles:
            raise IngestError(f"{src.path}: --ct-angles takes an image; this source is a {src.kind}")
        return _streamed(src, downsample, noise, noise_seed)
    image = np.concatenate(list(src.slabs(0, src.shape[0])))
    value_range = src.value_range or default_range(image, "image")
    meta, ident = dict(src.meta), dict(src.identity)
    if downsample:
        image = area_downsample(image, int(downsample), src.path)
        meta.update(downsample=int(downsample), original_shape=list(src.shape[:-1]),
                    anti_aliasing="area average")
        ident["downsample"] = int(downsample)
    if noise:
        kind, level = parse_noise(noise)
        image = add_noise(image, kind, level, noise_seed, value_range)
        meta.update(noise=f"{kind}:{level:g}", noise_seed=noise_seed)
        ident.update(noise=f"{kind}:{level:g}", noise_seed=noise_seed)
    out = array_source(src.path, src.nbytes, "image", image, ident, meta)
    out = replace(out, value_range=value_range)
    if ct_angles:
        out = _with_sinogram(out, image, int(ct_angles), value_range)
    return out


def _streamed(src: Source, downsample: int | None, noise: str | None, seed: int) -> Source:
    """A video, volume or audio source downsampled and/or made noisy, a slab at a time."""
    meta, ident, out = dict(src.meta), dict(src.identity), src
    value_range = src.value_range or (_scan_range(src) if noise else None)
    if downsample:
        factor = int(downsample)
        out = _block_means(src, factor)
        meta.update(downsample=factor, original_shape=list(src.shape[:-1]),
                    anti_aliasing="area average")
        meta.update({k: meta[k] / factor for k in ("fps", "sample_rate") if meta.get(k)})
        ident["downsample"] = factor
    if noise:
        kind, level = parse_noise(noise)
        out = _noisy(out, kind, level, seed, value_range)
        meta.update(noise=f"{kind}:{level:g}", noise_seed=seed)
        ident.update(noise=f"{kind}:{level:g}", noise_seed=seed)
    return replace(out, meta=meta, identity=ident, value_range=value_range)


def _scan_range(src: Source) -> tuple[float, float]:
    """The value range ingest would record for ``src``: from the dtype for integer video and
    volumes, else (floats; audio, whose range is its peak) from a pass over the values."""
    if src.dtype.kind != "f" and src.kind != "audio":
        return default_range(np.zeros(0, src.dtype), src.kind)
    low, high = np.inf, -np.inf
    for slab in src.slabs(0, max(1, (1 << 22) // max(1, int(np.prod(src.shape[1:]))))):
        low, high = min(low, float(slab.min())), max(high, float(slab.max()))
    return default_range(np.asarray([low, high], dtype=src.dtype), src.kind)


def _block_means(src: Source, factor: int) -> Source:
    """``src`` with each block of ``factor`` samples per axis averaged; the rows of a last
    block that the source does not fill (a video longer or shorter than announced) dropped."""
    dims = src.shape[:-1]
    what = "x".join(map(str, dims))
    if factor > min(dims):
        raise IngestError(f"--downsample {factor}: larger than the {what} {src.kind}")
    if any(n % factor for n in dims):
        raise IngestError(f"--downsample {factor} does not divide the {what} {src.kind}; choose a "
                          "factor of every axis")

    def slabs(start: int, rows: int):
        for slab in src.slabs(start * factor, rows * factor):
            whole = len(slab) - len(slab) % factor
            if whole:
                yield block_mean(slab[:whole], factor)

    shape = tuple(n // factor for n in dims) + src.shape[-1:]
    return replace(src, shape=shape, slabs=slabs)


def block_mean(array: np.ndarray, factor: int) -> np.ndarray:
    """The mean of every block of ``factor`` samples per axis of ``array`` [*dims, C], in its
    dtype (integers rounded)."""
    dims = array.shape[:-1]
    split = [x for n in dims for x in (n // factor, factor)] + [array.shape[-1]]
    mean = array.reshape(split).astype(np.float64).mean(axis=tuple(range(1, 2 * len(dims), 2)))
    return np.rint(mean).astype(array.dtype) if array.dtype.kind in "uib" else mean.astype(array.dtype)


def _noisy(src: Source, kind: str, level: float, seed: int,
           value_range: tuple[float, float]) -> Source:
    """``src`` with noise (as ``add_noise``) whose value at flat position i depends on (seed, i)
    alone: any slab, resumed or not, gets the same values."""
    row = int(np.prod(src.shape[1:]))
    lo, hi = value_range

    def slabs(start: int, rows: int):
        for slab in src.slabs(start, rows):
            unit = (slab.astype(np.float64) - lo) / (hi - lo)
            first, start = start * row, start + len(slab)
            if kind == "gaussian":  # Box-Muller on two uniforms per value
                u = uniforms(seed, 2 * first, 2 * unit.size).reshape(2, -1, order="F")
                normal = np.sqrt(-2.0 * np.log1p(-u[0])) * np.cos(2.0 * np.pi * u[1])
                noisy = unit + level * normal.reshape(unit.shape)
            else:                   # Poisson by its inverse distribution function
                from scipy.stats import poisson

                u = uniforms(seed, first, unit.size).reshape(unit.shape)
                noisy = np.maximum(poisson.ppf(u, np.clip(unit, 0, None) * level), 0) / level
            yield (np.clip(noisy, 0.0, 1.0) * (hi - lo) + lo).astype(np.float32)

    return replace(src, dtype=np.dtype(np.float32), slabs=slabs)


def uniforms(seed: int, first: int, count: int) -> np.ndarray:
    """Uniform draws ``first`` to ``first + count`` of the counter-based stream of ``seed``
    (Philox: four draws per counter value, so any position is reached directly)."""
    start = first // 4
    gen = np.random.Generator(np.random.Philox(key=seed, counter=start))
    return gen.random(first - 4 * start + count)[first - 4 * start:]


def area_downsample(image: np.ndarray, factor: int, path: str) -> np.ndarray:
    """The mean of every ``factor`` x ``factor`` block of ``image`` [H, W, C], in its dtype
    (integers rounded)."""
    h, w = image.shape[:2]
    if factor > min(h, w):
        raise IngestError(f"--downsample {factor}: larger than the {h}x{w} image")
    if h % factor or w % factor:
        raise IngestError(f"--downsample {factor} does not divide the {h}x{w} image; choose a "
                          f"factor of both sides or a size they divide (e.g. @{h - h % factor}x"
                          f"{w - w % factor})")
    return block_mean(image, factor)


def add_noise(image: np.ndarray, kind: str, level: float, seed: int,
              value_range: tuple[float, float]) -> np.ndarray:
    """``image`` with noise of ``kind`` at ``level`` (on the [0, 1] scale of ``value_range``),
    clipped to the range, float32 in the image's units."""
    lo, hi = value_range
    unit = (image.astype(np.float64) - lo) / (hi - lo)
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        noisy = unit + rng.normal(0.0, level, unit.shape)
    else:
        noisy = rng.poisson(np.clip(unit, 0, None) * level) / level
    return (np.clip(noisy, 0.0, 1.0) * (hi - lo) + lo).astype(np.float32)


ANGLES_PER_DETECTOR = 4
"""Projection angles per detector beyond which a sinogram holds nothing new (about pi/2 per
detector sample the image at its resolution): the bound on --ct-angles."""


def ct_angles(count: int) -> np.ndarray:
    """``count`` projection angles in degrees, evenly over [0, 180)."""
    return np.arange(count, dtype=np.float64) * (180.0 / count)


def sinogram(image: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Parallel-beam projections of a 2-D ``image`` [H, W] (H == W): float32 [detectors,
    angles], ``skimage.transform.radon`` with the image padded to its diagonal."""
    from skimage.transform import radon

    return radon(image.astype(np.float64), theta=angles, circle=False).astype(np.float32)


def _with_sinogram(src: Source, image: np.ndarray, count: int,
                   value_range: tuple[float, float]) -> Source:
    """``src`` (the reference image) with its sinogram attached: written beside the image in
    the store, described in its meta."""
    if image.shape[-1] != 1 or image.shape[0] != image.shape[1]:
        raise IngestError(f"{src.path}: --ct-angles needs a square single-channel image, got "
                          f"{'x'.join(map(str, image.shape))}; e.g. builtin:phantom@256")
    most = ANGLES_PER_DETECTOR * math.ceil(image.shape[0] * math.sqrt(2))
    if count > most:
        raise IngestError(f"--ct-angles {count}: more than {most} angles ({ANGLES_PER_DETECTOR} per "
                          f"detector of this {image.shape[0]}-pixel image) add nothing but work; "
                          "give fewer")
    return _attach_sinogram(src, sinogram(image[..., 0].astype(np.float64), ct_angles(count)),
                            ct_angles(count), count, reference=True)


def _measured(src: Source, count: int | None) -> Source:
    """The store of a measured sinogram: its filtered back-projection as the image, the
    sinogram beside it."""
    from skimage.transform import iradon

    if src.kind not in ("image", "volume") or len(src.shape) != 3 or src.shape[-1] != 1:
        raise IngestError(f"{src.path}: --sinogram needs a 2-D single-channel array [detectors, "
                          f"angles], got {'x'.join(map(str, src.shape))}")
    sino = np.concatenate(list(src.slabs(0, src.shape[0])))[..., 0].astype(np.float32)
    detectors, columns = sino.shape
    if count is not None and count != columns:
        raise IngestError(f"{src.path}: --ct-angles {count}, but the sinogram has {columns} "
                          "columns (one per angle)")
    if detectors < 3 or not np.isfinite(sino).all():
        raise IngestError(f"{src.path}: a sinogram needs at least 3 detector rows of finite values")
    n = int(detectors / np.sqrt(2))
    angles = ct_angles(columns)
    fbp = iradon(sino.astype(np.float64), theta=angles, circle=False, output_size=n,
                 filter_name="ramp").astype(np.float32)
    lo, hi = float(fbp.min()), float(fbp.max())
    margin = (hi - lo) / 4 or 1.0  # a back-projection blurs the image's extremes
    image = array_source(src.path, src.nbytes, "image", fbp[..., None], dict(src.identity),
                         {**src.meta, "sinogram_source": True})
    image = replace(image, value_range=(lo - margin, hi + margin))
    return _attach_sinogram(image, sino, angles, columns, reference=False)


def _attach_sinogram(src: Source, sino: np.ndarray, angles: np.ndarray, count: int,
                     reference: bool) -> Source:
    """``src`` (the image) with ``sino`` [detectors, angles] written beside it in the store;
    ``reference``: whether the image is the truth the reconstruction is scored against."""
    meta = {**src.meta, "measurement": {"operator": "radon", "array": SINOGRAM,
                                        "angles": angles.tolist(), "shape": list(sino.shape),
                                        "reference": reference}}

    def attach(path: Path) -> None:
        import zarr

        zarr.create_array(store=str(path / SINOGRAM), data=sino, overwrite=True)

    identity = {**src.identity, "ct_angles": count, **({} if reference else {"measured": True})}
    return replace(src, meta=meta, identity=identity, attach=attach)
