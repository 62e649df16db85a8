"""Where a result comes from: the source's commit and the machine, stamped on every run (tags
``mimo_l2o.commit``, ``mimo_l2o.machine``) and on every generated report."""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from pathlib import Path

import mimo_l2o


@functools.cache
def commit() -> str:
    """The git commit of the mimo_l2o source in use (``+dirty`` with uncommitted changes), or its
    version when it is not a git checkout."""
    root = Path(mimo_l2o.__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"mimo_l2o {mimo_l2o.__version__}"
    return f"{head}+dirty" if dirty else head


@functools.cache
def cpu() -> str:
    """The CPU's model name and the cores this process may use."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model}, {cores} cores"


def machine(device: str) -> str:
    """The machine a run ran on: CPU, cores, torch and the device it used (the GPU's name on CUDA)."""
    import torch

    where = device
    if device.startswith("cuda") and torch.cuda.is_available():
        where = f"{device} ({torch.cuda.get_device_name(torch.device(device))})"
    return f"{cpu()}, torch {torch.__version__}, {where}"
