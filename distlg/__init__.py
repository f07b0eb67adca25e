"""distlg: distributed training of croppable Local-Global implicit neural representations.

The data path, one module a step:
``store`` (ingest into Zarr) -> ``sampler`` (per-partition batches) -> ``model`` / ``fused``
(the Local-Global SIREN and its fast training step) -> ``parallel`` (local shards owned, global
branch all-reduced) -> ``train`` -> ``checkpoint`` / ``modeldir`` (one file per partition) ->
``crop`` -> ``render``.
"""

from .config import Config
from .data.signal import Signal
from .data.store import open_signal
from .errors import DistlgError
from .geometry import PartitionGrid
from .nn.model import INR, Architecture

__version__ = "0.1.0"

__all__ = ["Architecture", "Config", "DistlgError", "INR", "PartitionGrid", "Signal",
           "open_signal", "train"]


def train(config: Config | None = None, **overrides):
    """Train ``config`` (default: the embedded default signal) with ``field=value`` overrides."""
    from .train import train as _train

    config = (config or Config()).replace(**overrides) if overrides else (config or Config())
    return _train(config)
