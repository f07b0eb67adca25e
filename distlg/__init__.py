"""distlg: distributed training of croppable Local-Global implicit neural representations.

The package face: what ``import distlg`` offers, loaded on first use (PEP 562), so that
``distlg --help`` and ``import distlg.data.store`` load neither torch nor the trainer.

    import distlg
    result = distlg.train(steps=200)                    # the embedded default image
    model = distlg.open_signal("video.zarr")            # a signal store

The layers, lowest first (README, "Architecture"; ``tests/test_layout.py`` holds them):
ground-floor helpers at the top level (``errors``, ``geometry``, ``staging``, ``outputs``,
``progress``, ``resources``, ``metrics``, ``defaults``, ``config``, ``flags``, ``fielddocs``) ->
``data`` (sources, Zarr stores, samplers) and ``nn`` (the model, its one forward pass, the fused
step) -> ``kernels``
(Triton) -> ``modeldir`` (model directories on disk) -> ``rendering`` (regions, streamed) ->
``training`` (plan, step loop, distribution, checkpoints, evaluation, extend) -> ``commands``
and ``cli``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Architecture": "distlg.nn.architecture",
    "Config": "distlg.config",
    "DistlgError": "distlg.errors",
    "INR": "distlg.nn.model",
    "PartitionGrid": "distlg.geometry",
    "Signal": "distlg.data.signal",
    "TrainResult": "distlg.training.trainer",
    "open_signal": "distlg.data.store",
}

__all__ = sorted([*_EXPORTS, "train"])

if TYPE_CHECKING:
    from .config import Config
    from .training.trainer import TrainResult


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'distlg' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def train(config: Config | None = None, **overrides: Any) -> TrainResult:
    """Train ``config`` (default: the embedded default signal) with ``field=value`` overrides."""
    from .config import Config
    from .training.trainer import train as run

    config = config or Config()
    return run(config.replace(**overrides) if overrides else config)
