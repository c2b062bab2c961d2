"""Series made at scrape time from what /health reads, so Prometheus knows what /health knows.

- `shelver_build_info{version, python, boto3}` 1: which build answers.
- `shelver_consumer_failing{slot, reason}` 1 while a consumer's batches fail as a whole (S3
  down, say), exactly when /health reports that consumer's `failing`: the same status files and
  the same ageing out. Absent otherwise, and gone with the consumer. Labels stay bounded: slots
  are 0..CONSUMERS-1, reasons are error codes or exception class names.

Made here rather than kept in multiprocess gauges: a gauge would stay at 1 after its cause went
away unnoticed (an idle queue proves nothing), where /health ages the reason out.
"""

from __future__ import annotations

import functools
import platform
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata

from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from service.health import consumer_health
from workers import __version__
from workers.settings import Settings


@functools.cache
def build_labels() -> dict[str, str]:
    return {"version": __version__, "python": platform.python_version(),
            "boto3": metadata.version("boto3")}


@dataclass(frozen=True, eq=False)  # registries key collectors by identity
class StatusCollector(Collector):
    settings: Settings

    def collect(self) -> Iterator[Metric]:
        labels = build_labels()
        build = GaugeMetricFamily("shelver_build_info",
                                  "Shelver's version and those of Python and boto3; always 1.",
                                  labels=list(labels))
        build.add_metric(list(labels.values()), 1)
        yield build
        failing = GaugeMetricFamily(
            "shelver_consumer_failing",
            "1 while a consumer's batches fail as a whole (as /health's `failing`), by reason.",
            labels=["slot", "reason"])
        for consumer in consumer_health(self.settings):
            if consumer.failing is not None:
                failing.add_metric([str(consumer.slot), consumer.failing], 1)
        yield failing
