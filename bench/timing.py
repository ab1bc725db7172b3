"""Timing one call of the request path's pieces, for the micro-benchmarks in bench/."""

from __future__ import annotations

import time
from collections.abc import Callable


def per_call_us(call: Callable[[], object], repeat: int = 200_000) -> float:
    """The best of five runs of ``repeat`` calls, in µs per call."""
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(repeat):
            call()
        runs.append((time.perf_counter() - started) / repeat)
    return min(runs) * 1e6
