"""Progress on long work: tqdm's bar on a terminal, a plain periodic line elsewhere.

A bar redraws itself with carriage returns, which a log file (SLURM's, a redirect) keeps as
one endless line of frames. Where stderr is not a terminal, ``progress`` gives a
``PlainProgress`` instead: one line every ``PLAIN_EVERY_S`` seconds and one when done.
"""

from __future__ import annotations

import sys
import time
from typing import Any

PLAIN_EVERY_S = 30.0
"""Seconds between two plain progress lines."""


class PlainProgress:
    """tqdm's interface as used here (``update``, ``set_postfix``, ``write``, ``close``),
    printing ``DESC: N/TOTAL UNITs (P %), R UNITs/s[, k=v]`` lines to stderr."""

    def __init__(self, total: float | None, unit: str, desc: str, initial: float = 0,
                 every: float = PLAIN_EVERY_S):
        self.total, self.unit, self.desc, self.every = total, unit, desc, every
        self.n = self.start = initial
        self.postfix = ""
        self.t0 = self.last = time.perf_counter()
        self.closed = False

    def __enter__(self) -> "PlainProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: float = 1) -> None:
        self.n += n
        if time.perf_counter() - self.last >= self.every:
            self._line()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = "".join(f", {k} {v}" for k, v in values.items())

    def write(self, message: str) -> None:
        print(message, flush=True)

    def _line(self) -> None:
        self.last = time.perf_counter()
        rate = (self.n - self.start) / max(self.last - self.t0, 1e-9)
        done = f"{self.n:,.0f}" + (f"/{self.total:,.0f}" if self.total else "")
        share = f" ({100 * self.n / self.total:.0f} %)" if self.total else ""
        print(f"{self.desc}: {done} {self.unit}s{share}, {rate:,.1f} {self.unit}s/s{self.postfix}",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        """The closing line, when the work is done (a failed or interrupted one says so in its
        own line instead)."""
        if not self.closed:
            self.closed = True
            if self.total is None or self.n >= self.total:
                self._line()


def progress(total: float | None, unit: str, desc: str, enabled: bool = True, initial: float = 0,
             **tqdm_options: Any):
    """A progress display for ``total`` units: tqdm's bar on a terminal, ``PlainProgress``
    elsewhere, or a silent one when not ``enabled``."""
    from tqdm.auto import tqdm

    if enabled and not sys.stderr.isatty():
        return PlainProgress(total, unit, desc, initial)
    return tqdm(total=total, unit=unit, desc=desc, initial=initial, disable=not enabled,
                **tqdm_options)
