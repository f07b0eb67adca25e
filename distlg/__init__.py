"""distlg: distributed training of croppable Local-Global implicit neural representations.

The data path, room by room:
``data`` (sources ingested into Zarr stores, per-partition batches) -> ``nn`` (the Local-Global
SIREN and its fast training step) -> ``parallel`` (local shards owned, global branch
all-reduced) -> ``train`` (with ``plan``, ``optim`` and ``defaults``) -> ``modeldir`` (one file
per partition: checkpoints, export, crop, extend) -> ``rendering`` (any region, streamed).

On top: ``geometry`` (the partition grid), ``config`` (settings whose docstrings are --help),
``defaults`` (everything that depends on the signal's kind), ``metrics``, ``cli`` and
``commands``. Each room's ``__init__`` says what it may import; ``tests/test_layout.py``
holds them to it and to an import graph without cycles.
"""

from .config import Config
from .data.signal import Signal
from .data.store import open_signal
from .errors import DistlgError
from .geometry import PartitionGrid
from .nn.model import INR, Architecture
from .train import TrainResult
from .train import train as _train

__version__ = "0.1.0"

__all__ = ["Architecture", "Config", "DistlgError", "INR", "PartitionGrid", "Signal",
           "open_signal", "train"]


def train(config: Config | None = None, **overrides) -> TrainResult:
    """Train ``config`` (default: the embedded default signal) with ``field=value`` overrides.

    (The trainer module is imported above, not in here: importing ``distlg.train`` the first
    time sets the package's ``train`` attribute to the module, which must happen before this
    function is defined, or ``distlg.train`` stops being callable after the first call.)"""
    config = (config or Config()).replace(**overrides) if overrides else (config or Config())
    return _train(config)
