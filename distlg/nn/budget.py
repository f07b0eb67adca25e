"""Parameter budgeting: hidden widths from a total parameter count, as the paper does.

The paper picks the global width so that the global branch holds a given share of the weights
(5-15 %, default 10 %) and gives the rest to the local sub-networks. Here "global" means every
replicated tensor (global branch and merge), which is what a worker all-reduces.
"""

from __future__ import annotations

import numpy as np

from .. import defaults
from ..errors import DistlgError
from .architecture import base_arch
from .model import Architecture

MAX_WIDTH = 2048
TOLERANCE = 0.05
"""Largest relative distance from the budget that Local-Global widths may land at."""
SINGLE_WIDTH_TOLERANCE = 0.25
"""The same for the one-width baselines, whose count moves in coarse steps with the width."""


class BudgetError(DistlgError):
    """No widths reach the requested budget."""


def _count(arch: str, in_dims: int, out_dims: int, layers: int, merge: str, partitions: int,
           local: np.ndarray, glob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(global count, total count) for broadcastable arrays of local and global widths."""
    local, glob = np.asarray(local, dtype=np.int64), np.asarray(glob, dtype=np.int64)
    hidden = layers  # square layers after the first
    g_params = np.zeros(np.broadcast(local, glob).shape, dtype=np.int64)
    l_params = np.zeros_like(g_params)
    if arch != "per-partition":
        g_params = g_params + (in_dims + 1) * glob + hidden * (glob * glob + glob)
    if arch == "siren":
        g_params = g_params + glob * out_dims + out_dims
    else:
        l_params = l_params + (in_dims + 1) * local + hidden * (local * local + local) \
            + local * out_dims + out_dims
    if arch == "local-global" and merge == "bias":  # lattice projections and output term
        g_params = g_params + (layers + 1) * glob * local + glob * out_dims + out_dims
    elif arch == "local-global":
        depths = layers + 1
        merges = 1 if merge == "shared" else depths
        rows = glob if merge == "add" else local + glob
        g_params = g_params + merges * (rows * local + local)
    return g_params, g_params + partitions * l_params


def fit_widths(arch: str, params: int, partitions: int, in_dims: int, out_dims: int,
               hidden_layers: int = defaults.HIDDEN_LAYERS, merge: str = defaults.PAPER.merge,
               global_share: float = defaults.GLOBAL_SHARE,
               max_global_width: int | None = None, **kwargs) -> Architecture:
    """The architecture of kind ``arch`` whose parameter count is closest to ``params``.

    For Local-Global, among the width pairs whose total lies within 5 % of the budget, the one
    whose global share is closest to ``global_share`` wins; ``max_global_width`` caps the
    global width (the rest of the budget goes to the local sub-networks). Where no pair lies
    that close (many partitions: one local width moves the total by more), the closest total
    within one local width's step (at most 25 %) wins. The baselines have one width, so
    they get the closest count (within 25 %, as the width's step allows). Extra ``kwargs`` (w0, coord_scale)
    pass through to the ``Architecture``.
    """
    if params < 1:
        raise BudgetError(f"parameter budget must be positive, got {params}")
    if not 0 < global_share < 1:
        raise BudgetError(f"global share must lie in (0, 1), got {global_share}")
    widths = np.arange(1, MAX_WIDTH + 1)
    common = dict(in_dims=in_dims, out_dims=out_dims, hidden_layers=hidden_layers, merge=merge,
                  **kwargs)

    name, arch = arch, base_arch(arch)  # INCODE counts as its SIREN counterpart (+ constants)

    def count(local, glob):
        return _count(arch, in_dims, out_dims, hidden_layers, merge, partitions, local, glob)

    if arch == "siren":
        _, total = count(0, widths)
        g = int(widths[np.argmin(np.abs(total - params))])
        best = Architecture(name, global_width=g, **common)
    elif arch == "per-partition":
        _, total = count(widths, 0)
        l = int(widths[np.argmin(np.abs(total - params))])
        best = Architecture(name, local_width=l, **common)
    else:
        cap = min(MAX_WIDTH, max_global_width or MAX_WIDTH)
        local, glob = np.meshgrid(widths[:1024], widths[:cap], indexing="ij")
        g_count, total = count(local, glob)
        miss = np.abs(total / params - 1)
        share_miss = np.abs(g_count / total - global_share)
        ok = miss <= TOLERANCE
        if not ok.any():  # the local width coming closest, with the global widths near its best
            i = np.unravel_index(np.argmin(miss), miss.shape)[0]
            ok[i] = miss[i] <= miss[i].min() + TOLERANCE
        score = np.where(ok, share_miss, 10 + miss)
        i, j = np.unravel_index(np.argmin(score), score.shape)
        best = Architecture(name, local_width=int(local[i, j]), global_width=int(glob[i, j]),
                            **common)
    total = best.total_params(partitions)
    tolerance = TOLERANCE if arch == "local-global" else SINGLE_WIDTH_TOLERANCE
    if arch == "local-global":  # many partitions: one local width more may move the total further
        step = np.diff(count(np.array([best.local_width, best.local_width + 1]), best.global_width)[1])
        tolerance = max(tolerance, min(float(step[0]) / params, SINGLE_WIDTH_TOLERANCE))
    if abs(total / params - 1) > tolerance:
        raise BudgetError(
            f"no {name} widths reach {params:,} parameters within {tolerance:.0%} for "
            f"{partitions} partitions (closest: {total:,}); change the budget or the partitions")
    return best
