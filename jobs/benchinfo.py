"""What machine a benchmark ran on (CPU model, cores, load), and a wall-clock timer that
waits for a CUDA device to finish."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{platform.node()} | {cpu_model()} | {os.cpu_count()} cores | load {load:.1f}"


def timed(fn: Callable[[], object], device=None) -> float:
    """Seconds ``fn()`` takes; on a CUDA ``device``, queued kernels finish before both clocks."""
    sync = None
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        sync = torch.cuda.synchronize
    if sync:
        sync(device)
    start = time.perf_counter()
    fn()
    if sync:
        sync(device)
    return time.perf_counter() - start
