"""How many CPU cores this process may use: one answer for worker counts, thread counts and parallel jobs."""

from __future__ import annotations

import os

__all__ = ["available_cores"]


def available_cores() -> int:
    """Cores this process may run on (respects CPU affinity, e.g. under a job scheduler, `taskset` or a container)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
