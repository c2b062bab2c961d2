"""The reader side of prometheus_client's multiprocess mode: aggregate every process's files."""

from __future__ import annotations

import contextlib
import glob
import os
from collections.abc import Iterable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample


def _metric_files(pattern: str) -> list[str]:
    """The multiprocess files matching `pattern`, less those not sized yet.

    prometheus_client creates a process's file, then sizes it (and writes its header): a read
    in between finds it empty, and its merge then fails for every file (client_python#1199).
    A process killed at that moment (a consumer SIGKILLed as it starts) leaves the empty file
    for good. An empty file has recorded nothing; once sized, it reads as it should."""
    found = []
    for path in glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], pattern)):
        # A live gauge's file may be gone since the glob (mark_process_dead): the merge
        # tolerates that, the size check must too.
        with contextlib.suppress(FileNotFoundError):
            if os.path.getsize(path):
                found.append(path)
    return found


class _Collector:
    """MultiProcessCollector.collect over the files `_metric_files` keeps."""

    def collect(self) -> Iterable[Metric]:
        return MultiProcessCollector.merge(_metric_files("*.db"), accumulate=True)  # type: ignore[no-any-return,no-untyped-call]


def _registry(extra: tuple[Collector, ...]) -> CollectorRegistry:
    # A fresh registry per call: the files change between scrapes, and the default registry
    # would also report this HTTP worker's own (per-process) collectors.
    registry = CollectorRegistry()
    registry.register(_Collector())
    for collector in extra:
        registry.register(collector)
    return registry


def render_metrics(*extra: Collector) -> tuple[bytes, str]:
    """Every process's metrics, plus the `extra` collectors' (series made at scrape time)."""
    return generate_latest(_registry(extra)), CONTENT_TYPE_LATEST


def counter_totals(names: tuple[str, ...]) -> dict[str, float]:
    """Sum each named counter over all its labels and processes (`<name>_total` samples).

    Reads only the counter files: /health must stay fast while consumers are saturated, and
    histograms are most of the bytes a full collection would parse."""
    totals = dict.fromkeys(names, 0.0)
    files = _metric_files("counter_*.db")
    for family in MultiProcessCollector.merge(files, accumulate=True):  # type: ignore[no-untyped-call]
        for sample in family.samples:
            name = _counter_name(sample)
            if name in totals:
                totals[name] += sample.value
    return totals


def _counter_name(sample: Sample) -> str:
    return sample.name[: -len("_total")] if sample.name.endswith("_total") else ""
