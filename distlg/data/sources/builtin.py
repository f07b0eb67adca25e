"""Signals that ship with the installed packages: scikit-image's photographs, and the
Shepp-Logan phantom (``phantom``: float32 in [0, 1], the usual test image of CT)."""

from __future__ import annotations

import numpy as np

from ..signal import Signal, SignalError
from .base import Source, SourceOptions, array_source, choose_kind

PREFIX = "builtin:"
MAX_PIXELS = 1 << 26
"""Largest built-in size: it is resized in memory (3 bytes a pixel, 192 MiB at most)."""
BUILTIN_IMAGES = ("astronaut", "camera", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry",
                  "retina", "brick", "grass", "gravel", "text", "moon", "page", "horse", "phantom")


def builtin(name: str) -> Signal:
    """``NAME``, ``NAME@HxW`` or ``NAME@N`` (N x N), resized with Pillow's anti-aliased
    bilinear filter (what the paper's code does through torchvision), in the source's type
    (8-bit photographs, the phantom float32 in [0, 1])."""
    import skimage.data
    from PIL import Image

    base, _, size = name.partition("@")
    if base not in BUILTIN_IMAGES:
        raise SignalError(f"unknown built-in signal {base!r}; choose one of {', '.join(BUILTIN_IMAGES)}")
    image = np.asarray(skimage.data.shepp_logan_phantom(), np.float32) if base == "phantom" \
        else np.asarray(getattr(skimage.data, base)())
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if image.dtype == np.bool_:
        image = image.astype(np.uint8) * 255
    if size:
        try:
            h, w = (int(v) for v in (size.lower().split("x") if "x" in size.lower() else [size] * 2))
        except ValueError:
            raise SignalError(f"built-in size must look like 256x256, got {size!r}") from None
        if h < 1 or w < 1:
            raise SignalError(f"built-in size must be positive, got {size!r}")
        if h * w > MAX_PIXELS:
            raise SignalError(f"built-in size {h}x{w} would take {h * w * 3 / 2**30:,.1f} GiB in "
                              f"memory; the largest is {MAX_PIXELS:,} pixels (e.g. 8192x8192)")
        image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
        if base == "phantom":  # the filter's weights are positive: only rounding can leave [0, 1]
            image = np.clip(image, 0.0, 1.0)
    return Signal.from_array(image, "image", source=f"builtin:{name}")


def open_builtin(spec: str, options: SourceOptions) -> Source:
    """``builtin:NAME[@HxW]`` as an ingest source."""
    signal = builtin(spec[len(PREFIX):])
    choose_kind(options.kind, ("image",), spec)
    return array_source(spec, 0, "image", signal.data, {"builtin": spec}, {})
