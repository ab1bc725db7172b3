"""Metrics shared by the workers of one ``serve`` (the README: "Metrics", workers).

Each worker keeps its values in files of its own in one directory, fresh for the run
(prometheus_client's multiprocess mode), and a scrape of any worker adds up every
worker's files, so successive scrapes agree whichever worker answers:

- counters and histograms are summed, a dead worker's included, so a worker that is
  killed and replaced never makes a counter go back. The supervisor adds a dead worker's
  values into one file per kind (``forget_process``), so the files, and the time of a
  scrape, do not grow with restarts; a scrape waits for such a merge (a lock file) and
  never sees a dead worker's values twice or not at all;
- each gauge says how workers combine (``multiprocess_mode`` where it is declared); the
  ``live`` modes count only running workers: the supervisor drops a dead worker's
  (``forget_process``);
- what a worker reads from its own state (sessions, requests in flight, queues, its
  process) it publishes every ``PUBLISH_INTERVAL`` and just before it answers a scrape,
  so another worker's part of a scrape is at most that old.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector, values
from prometheus_client.metrics_core import Metric
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

try:
    import fcntl
except ImportError:  # Windows: see ``_locked``
    fcntl = None  # type: ignore[assignment]

PUBLISH_INTERVAL = 1.0  # seconds
_MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
_LOCK = "merge.lock"  # not a *.db: not read as metrics
_SUMMED = ("counter", "histogram", "summary")  # the kinds whose values add up across workers


def share_between_processes(directory: Path) -> None:
    """From now on, keep this process's metric values in files in ``directory``.

    Process-wide, for the life of the process: a worker calls it once, before its
    metrics are made. prometheus_client chooses where values live when it is imported
    (from this variable); a worker is forked after that, so the choice is made again."""
    os.environ[_MULTIPROC_DIR] = str(directory)
    values.ValueClass = values.MultiProcessValue()


@contextmanager
def _locked(directory: Path, exclusive: bool) -> Iterator[None]:
    """Between a scrape (shared) and the merge of a dead worker's files (exclusive).
    Without fcntl (Windows) there are no workers (they need fork): nothing to lock."""
    if fcntl is None:
        yield
        return
    with (directory / _LOCK).open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield


class _FilesCollector(MultiProcessCollector):
    def collect(self) -> Iterable[Metric]:
        with _locked(Path(self._path), exclusive=False):
            return list(super().collect())


def files_collector(directory: Path) -> Collector:
    """What a scrape shows with workers: every worker's values, combined."""
    return _FilesCollector(None, path=str(directory))


def forget_process(pid: int, directory: Path) -> None:
    """A worker ended: its gauges of the ``live`` modes stop counting; its counters and
    histograms are added into the dead workers' file of their kind."""
    mark_process_dead(pid, str(directory))
    with _locked(directory, exclusive=True):
        for kind in _SUMMED:
            own = directory / f"{kind}_{pid}.db"
            if not own.exists():
                continue
            _add_into(directory / f"{kind}_dead.db", own)
            own.unlink()


def _add_into(total: Path, part: Path) -> None:
    """Add each value of the file ``part`` into the file ``total`` (made if need be)."""
    dead, own = MmapedDict(str(total)), MmapedDict(str(part), read_mode=True)
    try:
        before = {key: value for key, value, _ in dead.read_all_values()}
        for key, value, stamp in list(own.read_all_values()):
            dead.write_value(key, before.get(key, 0.0) + value, stamp)
    finally:
        own.close()
        dead.close()


# Each process_* gauge: how a worker's combines with the others', and what it says.
_PROCESS_GAUGES = {
    "process_virtual_memory_bytes": ("livesum", "Virtual memory of the running workers."),
    "process_resident_memory_bytes": ("livesum", "Resident memory of the running workers."),
    "process_open_fds": ("livesum", "File descriptors the running workers have open."),
    "process_max_fds": ("livemin", "The lowest limit on open file descriptors of a worker."),
    "process_start_time_seconds": (
        "livemax",
        "When the newest running worker started (Unix time): a restart shows.",
    ),
}


class ProcessPublisher:
    """The standard ``process_*`` metrics for workers: the CPU time of every worker that
    ran (a counter), the memory and file descriptors of the running ones together.

    A scrape reads files, not processes, so each worker copies its own figures into
    them (``publish``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._own = ProcessCollector(registry=None)
        self._cpu = Counter(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds, by every worker of this run.",
            registry=registry,
        )
        self._cpu_seen = 0.0
        self._gauges = {
            name: Gauge(name, text, registry=registry, multiprocess_mode=mode)  # type: ignore[arg-type]
            for name, (mode, text) in _PROCESS_GAUGES.items()
        }

    def publish(self) -> None:
        for family in self._own.collect():
            for sample in family.samples:
                if sample.name == "process_cpu_seconds_total":
                    self._cpu.inc(max(0.0, sample.value - self._cpu_seen))
                    self._cpu_seen = max(self._cpu_seen, sample.value)
                elif (gauge := self._gauges.get(sample.name)) is not None:
                    gauge.set(sample.value)
