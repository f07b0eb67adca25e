"""What the machine can hold: memory checked before work that would allocate without bound,
and devices checked before work is sent to them."""

from __future__ import annotations

import os

import torch

from .errors import DistlgError


def available_memory() -> int:
    """Bytes of memory available to a new allocation (Linux: MemAvailable; elsewhere the
    physical memory)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 62  # unknown: do not refuse


def gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"


def usable_device(name: str | torch.device, error: type[DistlgError] = DistlgError) -> torch.device:
    """The device ``name`` (cpu, cuda, cuda:N ...) once a tensor has been placed on it and read
    back; ``error`` with one line for a name torch does not know or a device this machine
    lacks or cannot use."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise error(f"unknown device {str(name)!r}; use cpu, cuda or cuda:N") from None
    try:
        torch.zeros(1, device=device).cpu()
    except Exception as exc:  # no CUDA build, no GPU, an ordinal past the last one, meta
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise error(f"device {device} cannot be used here ({reason})") from None
    return device
