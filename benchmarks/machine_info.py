"""What every benchmark records about the machine it ran on, so a figure can be judged beside its conditions."""

from __future__ import annotations

import os
import platform


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask, which containers narrow), not the host's count."""
    from moleclip.processing.cores import available_cores

    return available_cores()


def describe_machine() -> dict:
    """Platform, core count, library versions, and the load average when the benchmark started: other work on a
    shared machine skews every timing, so the load is part of the result."""
    import numpy
    import rdkit
    import torch

    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(), "cpu_cores": cpu_cores(), "torch": torch.__version__,
            "rdkit": rdkit.__version__, "numpy": numpy.__version__}
    if hasattr(os, "getloadavg"):
        info["load_average_1min_at_start"] = round(os.getloadavg()[0], 2)
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info
