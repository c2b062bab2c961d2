"""The reader side of prometheus_client's multiprocess mode: aggregate every process's files."""

from __future__ import annotations

import glob
import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample


def _registry(extra: tuple[Collector, ...]) -> CollectorRegistry:
    # A fresh registry per call: the files change between scrapes, and the default registry
    # would also report this HTTP worker's own (per-process) collectors.
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
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
    files = glob.glob(os.path.join(os.environ["PROMETHEUS_MULTIPROC_DIR"], "counter_*.db"))
    for family in MultiProcessCollector.merge(files, accumulate=True):  # type: ignore[no-untyped-call]
        for sample in family.samples:
            name = _counter_name(sample)
            if name in totals:
                totals[name] += sample.value
    return totals


def _counter_name(sample: Sample) -> str:
    return sample.name[: -len("_total")] if sample.name.endswith("_total") else ""
