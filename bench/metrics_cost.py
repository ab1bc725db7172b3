"""What one request's metrics update costs (``Metrics.request``), in microseconds.

Measured twice: with the values in memory (one worker) and in files shared by workers
(``workers: N``, prometheus_client's multiprocess mode). Each figure is the best of
``--repeat`` runs of ``--number`` calls, for an upstream's 200 and for a proxy-made 502.

    .venv/bin/python bench/metrics_cost.py
"""

from __future__ import annotations

import argparse
import tempfile
import timeit
from collections.abc import Callable
from pathlib import Path

from proxy.ops.metrics import Metrics
from proxy.ops.metrics_files import share_between_processes


def best_microseconds(call: Callable[[], None], number: int, repeat: int) -> float:
    return min(timeit.repeat(call, number=number, repeat=repeat)) / number * 1e6


def measure(metrics: Metrics, number: int, repeat: int) -> dict[str, float]:
    metrics.add_routes(["iics"])
    return {
        "upstream 200": best_microseconds(
            lambda: metrics.request("iics", 200, 0.012, False), number, repeat
        ),
        "login_rejected 502": best_microseconds(
            lambda: metrics.request("iics", 502, 0.012, False, "login_rejected"), number, repeat
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    results = {"in memory": measure(Metrics(list, int), args.number, args.repeat)}
    with tempfile.TemporaryDirectory() as directory:
        share_between_processes(Path(directory))  # for the rest of this process
        shared = Metrics(list, int, shared=Path(directory))
        results["shared files"] = measure(shared, args.number, args.repeat)
    for mode, figures in results.items():
        line = ", ".join(f"{what}: {us:.2f} µs" for what, us in figures.items())
        print(f"{mode:>12}: {line}")


if __name__ == "__main__":
    main()
