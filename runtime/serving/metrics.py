"""Online scoring's Prometheus metrics (`GET /metrics`): requests by route, Model and status, the
latency split into queue, compute and serialisation, batch sizes, queue depth, model load time.
One registry per serving process (never the library's global one: tests build many).

A request adds to plain counters and bucket lists (a few list increments, no lock: requests are
recorded on the event loop); a scrape turns them into the Prometheus families (a collector), so
the exposition is what prometheus-client's Counter, Histogram and Gauge would write."""
from __future__ import annotations

from bisect import bisect_left
from typing import Any, Callable, Iterator, Optional

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PHASES = (("queue", "queue_ms"), ("compute", "compute_ms"), ("serialisation", "serialise_ms"))


class _Histogram:
    """Observations per bucket (the last one +Inf) and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1   # a bound is "less or equal"
        self.sum += value

    def family_sample(self) -> tuple[list[tuple[str, int]], float]:
        from prometheus_client.utils import floatToGoString

        buckets, total = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts):
            total += count
            buckets.append((floatToGoString(bound), total))
        return buckets, self.sum


class ServingMetrics:
    def __init__(self, depths: Optional[Callable[[], dict[str, int]]] = None) -> None:
        """`depths`: each Model's requests in flight, read when the metrics are (not set per
        request)."""
        self.depths = depths
        self._children: dict[tuple[str, str, int], Any] = {}
        self._requests: dict[tuple[str, str, int], list[int]] = {}
        self._latency: dict[tuple[str, str], _Histogram] = {}
        self._batch_rows: dict[str, _Histogram] = {}
        self._depth: dict[str, int] = {}
        self._load_s: dict[str, float] = {}
        from prometheus_client import CollectorRegistry

        self.registry = CollectorRegistry()
        self.registry.register(self)

    def _latency_of(self, model: str, phase: str) -> _Histogram:
        found = self._latency.get((model, phase))
        if found is None:
            found = self._latency[(model, phase)] = _Histogram(LATENCY_BUCKETS)
        return found

    def request(self, route: str, model: str, status: int, total_s: float,
                timings: dict[str, Any]) -> None:
        children = self._children.get((route, model, status))
        if children is None:   # the series of this route, Model and status, looked up once
            batch = self._batch_rows.get(model)
            if batch is None:
                batch = self._batch_rows[model] = _Histogram(BATCH_BUCKETS)
            children = self._children[(route, model, status)] = (
                self._requests.setdefault((route, model, status), [0]),
                self._latency_of(model, "total"),
                [(self._latency_of(model, phase), key) for phase, key in PHASES], batch)
        count, total, phases, batch_rows = children
        count[0] += 1
        total.observe(total_s)
        if timings:
            for histogram, key in phases:
                value = timings.get(key)
                if value is not None:
                    histogram.observe(value / 1000.0)
            if timings.get("first") and isinstance(timings.get("batch_rows"), int):
                batch_rows.observe(timings["batch_rows"])   # once per batch

    def depth(self, model: str, value: int) -> None:
        self._depth[model] = value

    def loaded(self, host: Any) -> None:
        self._load_s[host.model_id] = host.started_s

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        if self.depths is not None:
            for model, value in self.depths().items():
                self.depth(model, value)
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Any]:
        """The families, as a scrape reads them (prometheus-client's collector protocol)."""
        from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                            HistogramMetricFamily)

        requests = CounterMetricFamily("mlruntime_online_requests", "Online scoring requests",
                                       labels=["route", "model", "status"])
        for (route, model, status), count in list(self._requests.items()):
            requests.add_metric([route, model, str(status)], count[0])
        yield requests
        latency = HistogramMetricFamily(
            "mlruntime_online_latency_seconds",
            "Online request latency by phase (total: as the API saw it)",
            labels=["model", "phase"])
        for (model, phase), histogram in list(self._latency.items()):
            latency.add_metric([model, phase], *histogram.family_sample())
        yield latency
        batch_rows = HistogramMetricFamily("mlruntime_online_batch_rows",
                                           "Rows per computed batch", labels=["model"])
        for model, histogram in list(self._batch_rows.items()):
            batch_rows.add_metric([model], *histogram.family_sample())
        yield batch_rows
        depth = GaugeMetricFamily("mlruntime_online_queue_depth",
                                  "Requests sent to a model host and not yet answered",
                                  labels=["model"])
        for model, value in list(self._depth.items()):
            depth.add_metric([model], value)
        yield depth
        load = GaugeMetricFamily("mlruntime_online_model_load_seconds",
                                 "Seconds from a host's start to its Model answering",
                                 labels=["model"])
        for model, value in list(self._load_s.items()):
            load.add_metric([model], value)
        yield load
