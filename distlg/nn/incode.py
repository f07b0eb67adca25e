"""INCODE's harmonizer: the activation coefficients of an INCODE model, computed from the signal.

INCODE (Kazerouni et al., WACV 2024) modulates every sine layer as
exp(a) sin(exp(b) w0 z + c) + d, with (a, b, c, d) produced per signal by a harmonizer: a
feature extractor applied to the ground truth, global average pooling, and a small MLP
(features -> 64 -> 32 -> 4 x sets, SiLU; the last bias starting at 0.3120 in its image code,
at 0 here: ``PAPER_MLP_BIAS``). The extractor depends on the signal's axes:

- 2-D (images): ResNet-34's stem truncated after layer1 (conv 7x7/2 to 64 channels, batch
  norm, ReLU, max-pool 3x3/2, three basic blocks of 64 channels);
- 3-D (video, volumes): the same in 3-D, with a (3, 7, 7) first kernel, stride (1, 2, 2);
- 1-D (audio): MFCCs (log-mel spectrogram and DCT, from torch.stft), standardised across
  coefficients after pooling (the MLP sees unit-scale inputs whatever the recording's level).

The harmonizer trains jointly with the rest and is part of the replicated part: every worker
holds it and computes it on the same input; workers sum the gradient of its output, the
coefficients, exactly (``distlg.training.exact``) and backpropagate that through it alike
(``StepCoefficients``). Its input is a
bounded downsampled view of the signal (``read_preview``: a strided read of the store, at
most 256 x 256 pixels, 16 x 128 x 128 for video, 64^3 for volumes, a centred 2^17-sample
excerpt of audio; on a CT store, of its sinogram: ``training.measured.harmonizer_input``).
Its batch norms always use the statistics of that one input (no running statistics), so the
coefficients are a fixed function of the weights: every worker gets the same, and a
checkpoint's coefficients are recomputed exactly on resume. A model stores the coefficients as
constants (``incode.coefficients``); rendering never needs the harmonizer.

Pretrained extractor weights load from a safetensors file with torchvision's ResNet names
(``conv1.weight``, ``bn1.weight``, ``bn1.bias``, ``layer1.{0,1,2}.{conv1,conv2}.weight``,
``layer1.{0,1,2}.{bn1,bn2}.{weight,bias}``; 3-D kernels for video and volumes); other tensors
(running statistics, later layers) are ignored.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ..errors import DistlgError
from .architecture import Architecture

PAPER_MLP_BIAS = 0.3120
"""Initial bias of the MLP's output layer in INCODE's image experiments. distlg starts from 0
(``--harmonizer-bias``): the activation then starts as SIREN's, whose initialisation is made
for it. At 0.3120 every sine layer starts with its amplitude and frequency scaled by
exp(0.312) = 1.37, which stacked layers compound: measured on the downstream benchmark
(benchmarks/results/incode.md against incode_bias0312.md), 0 beat 0.3120 for every INCODE arch
and task but one-network image fitting (-0.5 dB); the paper's Local-Global recipe, run by hand
with the benchmark's fitting settings, went from 18.8 to 28.9 dB."""
FEATURES = 64
"""Channels of the ResNet stems' output."""
MFCC_COEFFICIENTS = 40
PREVIEW_PIXELS = (256, 256)
PREVIEW_BY_KIND = {"video": (16, 128, 128), "volume": (64, 64, 64)}
PREVIEW_SAMPLES = 1 << 17


class HarmonizerError(DistlgError):
    """Harmonizer weights that cannot be used."""


# -- 2-D / 3-D: a truncated ResNet ---------------------------------------------------------------
class BasicBlock(nn.Module):
    """Two 3x3 (x3) convolutions with batch norm and an identity shortcut (ResNet's block)."""

    def __init__(self, ndim: int, width: int = FEATURES):
        super().__init__()
        conv, norm = _layers(ndim)
        self.conv1 = conv(width, width, 3, padding=1, bias=False)
        self.bn1 = norm(width, track_running_stats=False)
        self.conv2 = conv(width, width, 3, padding=1, bias=False)
        self.bn2 = norm(width, track_running_stats=False)

    def forward(self, x: Tensor) -> Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + x)


class ResNetStem(nn.Module):
    """ResNet-34 up to and including layer1, in 2-D or 3-D: [1, C, *dims] -> [1, 64, *dims/4]."""

    def __init__(self, ndim: int, channels: int):
        super().__init__()
        conv, norm = _layers(ndim)
        kernel, stride, pad = ((7, 2, 3) if ndim == 2 else ((3, 7, 7), (1, 2, 2), (1, 3, 3)))
        self.conv1 = conv(channels, FEATURES, kernel, stride=stride, padding=pad, bias=False)
        self.bn1 = norm(FEATURES, track_running_stats=False)
        self.maxpool = (nn.MaxPool2d if ndim == 2 else nn.MaxPool3d)(3, stride=2, padding=1)
        self.layer1 = nn.Sequential(*[BasicBlock(ndim) for _ in range(3)])

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        return self.layer1(x).mean(dim=tuple(range(2, x.dim())))[0]      # global average pool


def _layers(ndim: int):
    return (nn.Conv2d, nn.BatchNorm2d) if ndim == 2 else (nn.Conv3d, nn.BatchNorm3d)


# -- 1-D: MFCCs ----------------------------------------------------------------------------------
def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: float) -> Tensor:
    """Triangular filters on the HTK mel scale: [n_freqs, n_mels]."""
    def mel(f): return 2595.0 * torch.log10(1.0 + f / 700.0)
    def hz(m): return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    freqs = torch.linspace(0, sample_rate / 2, n_freqs, dtype=torch.float64)
    edges = hz(torch.linspace(0, float(mel(torch.tensor(sample_rate / 2))), n_mels + 2,
                              dtype=torch.float64))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (freqs[:, None] - lower) / (centre - lower)
    falling = (upper - freqs[:, None]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0).float()


def dct_matrix(n_in: int, n_out: int) -> Tensor:
    """Orthonormal DCT-II as a matrix [n_in, n_out] (x @ D gives the first n_out coefficients)."""
    n = torch.arange(n_in, dtype=torch.float64)[:, None]
    k = torch.arange(n_out, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi / n_in * (n + 0.5) * k) * math.sqrt(2.0 / n_in)
    d[:, 0] /= math.sqrt(2.0)
    return d.float()


class MFCC(nn.Module):
    """[channels, T] audio -> its MFCCs averaged over frames and channels, standardised: [40]."""

    def __init__(self, sample_rate: float, n_mels: int = 128):
        super().__init__()
        self.n_fft = 1 << max(8, round(math.log2(0.046 * sample_rate)))   # ~46 ms windows
        self.hop = self.n_fft // 4
        n_mels = min(n_mels, self.n_fft // 4)
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.register_buffer("mel", mel_filterbank(self.n_fft // 2 + 1, n_mels, sample_rate),
                             persistent=False)
        self.register_buffer("dct", dct_matrix(n_mels, MFCC_COEFFICIENTS), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window, return_complex=True)
        power = spec.abs().pow(2).transpose(-1, -2)                          # [C, frames, freqs]
        log_mel = 10.0 * torch.log10(torch.clamp(power @ self.mel, min=1e-10))
        pooled = (log_mel @ self.dct).mean(dim=(0, 1))
        return nn.functional.layer_norm(pooled, pooled.shape)


# -- the harmonizer ------------------------------------------------------------------------------
class Harmonizer(nn.Module):
    """Extractor, pooling and MLP; ``harmonizer()`` gives the coefficients [sets, 4] of
    ``preview`` (held as a buffer: every call sees the same input)."""

    def __init__(self, arch: Architecture, preview: Tensor, sample_rate: float | None = None,
                 bias: float = 0.0):
        super().__init__()
        ndim, sets = arch.in_dims, len(arch.coefficient_sets)
        if ndim == 1:
            self.extractor, features = MFCC(sample_rate or 44100.0), MFCC_COEFFICIENTS
        else:
            self.extractor, features = ResNetStem(ndim, preview.shape[1]), FEATURES
        self.mlp = nn.Sequential(nn.Linear(features, 64), nn.SiLU(), nn.Linear(64, 32), nn.SiLU(),
                                 nn.Linear(32, 4 * sets))
        nn.init.constant_(self.mlp[-1].bias, bias)
        self.sets = sets
        self.register_buffer("preview", preview, persistent=False)

    def forward(self, preview: Tensor | None = None) -> Tensor:
        features = self.extractor(self.preview if preview is None else preview)
        return self.mlp(features).view(self.sets, 4)

    def load_extractor(self, path: str | Path) -> None:
        """Extractor weights from a safetensors file (names as in the module docstring)."""
        from safetensors.torch import load_file

        if not Path(path).is_file():
            raise HarmonizerError(f"--harmonizer-weights {path} is not a file")
        try:
            tensors = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise HarmonizerError(f"--harmonizer-weights {path} is not a safetensors file "
                                  f"({str(exc).splitlines()[0]})") from None
        own = dict(self.extractor.named_parameters())
        if not own:
            raise HarmonizerError("--harmonizer-weights: the audio harmonizer (MFCCs) has no "
                                  "extractor weights; leave the option out")
        for name, p in own.items():
            if name not in tensors:
                raise HarmonizerError(f"--harmonizer-weights {path} has no tensor {name!r} "
                                      "(ResNet names: conv1.weight, bn1.weight, layer1.0.conv1.weight, ...)")
            if tuple(tensors[name].shape) != tuple(p.shape):
                raise HarmonizerError(f"--harmonizer-weights {path}: {name!r} has shape "
                                      f"{tuple(tensors[name].shape)}, this signal's extractor "
                                      f"needs {tuple(p.shape)}")
        with torch.no_grad():
            for name, p in own.items():
                p.copy_(tensors[name])


class StepCoefficients:
    """Each step's coefficients, cut from the harmonizer's graph so that workers sum only the
    coefficients' gradient (8 or 12 numbers).

    ``step()`` runs the harmonizer and returns its output as the leaf ``leaf`` [sets, 4]: the
    model's forward uses the leaf, so the loss's gradient stops there. Workers sum the leaf's
    gradient (where the harmonizer's own gradients are about 1 MB); ``backward()`` then
    carries the summed gradient through the harmonizer, on every worker the same computation on
    the same numbers, so every copy steps alike. This gives the gradient that summing the
    harmonizer's own gradients would (J^T sum v = sum J^T v) with less rounding. The leaf's
    gradient must be summed exactly for the copies to stay alike over many steps (any
    rounding-level difference grows to percent within 100 steps): ``distlg.training.exact``.
    """

    def __init__(self, harmonizer: Harmonizer):
        self.harmonizer = harmonizer
        device = harmonizer.preview.device
        self.leaf = torch.zeros(harmonizer.sets, 4, device=device, requires_grad=True)
        self._out: Tensor | None = None

    def step(self) -> Tensor:
        """The harmonizer's current coefficients as the leaf (call with grad enabled)."""
        self._out = self.harmonizer()
        with torch.no_grad():
            self.leaf.copy_(self._out)
        return self.leaf

    __call__ = step

    def backward(self) -> None:
        """Add the harmonizer's gradients for the leaf's (summed) gradient; clear the leaf's."""
        if self._out is not None and self.leaf.grad is not None:
            self._out.backward(self.leaf.grad)
            self.leaf.grad.zero_()
        self._out = None


def build(arch: Architecture, preview: Tensor, seed: int, sample_rate: float | None = None,
          weights: str | Path | None = None, bias: float = 0.0) -> Harmonizer:
    """The harmonizer of ``arch``, initialised from ``seed`` alone (the same on every worker),
    its last bias at ``bias``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(np.random.SeedSequence([seed, 0x1AC0DE]).generate_state(1)[0]))
        harmonizer = Harmonizer(arch, preview, sample_rate, bias)
    if weights is not None:
        harmonizer.load_extractor(weights)
    return harmonizer


# -- its input -----------------------------------------------------------------------------------
def preview_shape(kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The largest extent per axis ``read_preview`` keeps of a ``kind`` signal."""
    if len(shape) == 1:
        return (PREVIEW_SAMPLES,)
    return PREVIEW_BY_KIND.get(kind, PREVIEW_PIXELS)[-len(shape):]


def preview_steps(shape: tuple[int, ...], bounds: tuple[int, ...]) -> tuple[int, ...]:
    """The stride per axis that keeps at most ``bounds`` samples of ``shape``: ceil(n / bound)."""
    return tuple(max(1, -(-n // b)) for n, b in zip(shape, bounds))


def read_preview(signal) -> Tensor:
    """The harmonizer's input: a downsampled view of ``signal`` in [-1, 1], laid out for its
    extractor ([1, C, *dims] for 2-D and 3-D, [C, T] for audio). Grids are read with a stride
    per axis (ceil(n / bound)), so the read touches only the chunks holding those samples;
    audio takes its centred excerpt (a stride would alias the spectrum)."""
    bounds = preview_shape(signal.kind, signal.shape)
    if len(signal.shape) == 1:
        n = min(signal.shape[0], bounds[0])
        start = (signal.shape[0] - n) // 2
        raw = np.asarray(signal.data[start:start + n])
        return torch.from_numpy(signal.normalise(raw)).T.contiguous()
    steps = preview_steps(signal.shape, bounds)
    raw = np.asarray(signal.data[tuple(slice(None, None, s) for s in steps)])
    values = torch.from_numpy(signal.normalise(raw))
    return values.movedim(-1, 0).unsqueeze(0).contiguous()
