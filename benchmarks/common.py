"""Shared by the benchmarks: interleaved timing (the machines are shared and noisy, so the
things compared run in alternation and medians are reported) and JSON output."""

from __future__ import annotations

import json
import platform
import statistics
import time
from typing import Callable

import torch


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each callable, run in turn ``repeats`` times after ``warmup`` rounds."""
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def environment() -> dict[str, object]:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or
            platform.machine(), "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


def report(result: dict[str, object]) -> None:
    print(json.dumps(result, indent=2))
