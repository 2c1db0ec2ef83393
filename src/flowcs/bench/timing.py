"""Timing a call many times, and the machine it ran on (shared by every benchmark)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["percentiles", "time_calls", "environment", "load_average"]


def percentiles(ms: list[float]) -> dict:
    """p50 / p90 / p99 / mean / min / max of a list of milliseconds (nearest-rank on the sorted list)."""
    import math

    if not ms:
        return {}
    s = sorted(ms)

    def q(p: float) -> float:
        return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]

    return {"p50_ms": round(q(50), 3), "p90_ms": round(q(90), 3), "p99_ms": round(q(99), 3),
            "mean_ms": round(sum(s) / len(s), 3), "min_ms": round(s[0], 3), "max_ms": round(s[-1], 3), "n": len(s)}


def time_calls(fn, runs: int, warmup: int = 0, sync=None) -> tuple[list[float], list[float]]:
    """Wall-clock and thread-CPU milliseconds of ``runs`` calls ``fn(i)`` after ``warmup`` untimed calls."""
    import time

    for i in range(warmup):
        fn(i)
    if sync:
        sync()
    wall, cpu = [], []
    for i in range(runs):
        c0, t0 = time.thread_time(), time.perf_counter()
        fn(i)
        if sync:
            sync()
        wall.append(1000 * (time.perf_counter() - t0))
        cpu.append(1000 * (time.thread_time() - c0))
    return wall, cpu


def environment(device) -> dict:
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    env = {"cpu_model": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "torch_interop_threads": torch.get_num_interop_threads(),
           "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"), "torch_version": torch.__version__,
           "python": platform.python_version(), "device": str(device), "platform": platform.platform()}
    if getattr(device, "type", str(device)) == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def load_average() -> list[float]:
    """The 1 / 5 / 15-minute load averages (os.getloadavg), rounded."""
    return [round(v, 2) for v in os.getloadavg()]
