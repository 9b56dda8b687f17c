"""The machine a process runs on, as the paper names it: CPU model, the cores the process may
use, torch's thread count and the GPU.

Each training process records these beside what its epochs cost (``epochs.csv``), because the
process that trains is the one whose hardware the cost table and the provenance record must
name: under a cluster profile the training jobs run on GPU nodes, while the record and the paper
are written wherever the report jobs land, often a node without a GPU. A resumed run may even
change nodes between epochs, so the columns are per epoch.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["MACHINE_COLUMNS", "cpu_model", "cpu_cores", "gpu_name", "this_machine"]

#: What ``epochs.csv`` records of the machine that ran each epoch (``gpu_name`` empty on CPU).
MACHINE_COLUMNS = ["cpu_model", "cpu_cores", "torch_threads", "gpu_name"]


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (``/proc/cpuinfo``), else what Python's
    ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_cores() -> int:
    """The cores this process may run on: a cluster job's allocation (its CPU affinity), not
    the node's total; the machine's count where affinity is not available."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def gpu_name(device: torch.device | str) -> str | None:
    """The name of the GPU ``device`` names when it is CUDA and one is visible here, else None.
    torch is imported only for a CUDA device, so that the provenance record (a report job) can
    describe a CPU machine without loading torch."""
    if not str(device).startswith("cuda"):
        return None
    import torch

    return torch.cuda.get_device_name(torch.device(device)) if torch.cuda.is_available() else None


def this_machine(device: torch.device | str) -> dict[str, Any]:
    """:data:`MACHINE_COLUMNS` for this training process, on ``device``."""
    import torch

    return {
        "cpu_model": cpu_model(),
        "cpu_cores": cpu_cores(),
        "torch_threads": torch.get_num_threads(),
        "gpu_name": gpu_name(device),
    }
