"""Online scoring's Prometheus metrics (`GET /metrics`): requests by route, Model and status, the
latency split into queue, compute and serialisation, batch sizes, queue depth, model load time.
One registry per serving process (never the library's global one: tests build many)."""
from __future__ import annotations

from typing import Any, Callable, Optional

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096, 16384)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PHASES = (("queue", "queue_ms"), ("compute", "compute_ms"), ("serialisation", "serialise_ms"))


class ServingMetrics:
    def __init__(self, depths: Optional[Callable[[], dict[str, int]]] = None) -> None:
        """`depths`: each Model's requests in flight, read when the metrics are (not set per
        request)."""
        self.depths = depths
        self._children: dict[tuple[str, str, int], Any] = {}
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("mlruntime_online_requests", "Online scoring requests",
                                ["route", "model", "status"], registry=self.registry)
        self.latency = Histogram("mlruntime_online_latency_seconds",
                                 "Online request latency by phase (total: as the API saw it)",
                                 ["model", "phase"], buckets=LATENCY_BUCKETS,
                                 registry=self.registry)
        self.batch_rows = Histogram("mlruntime_online_batch_rows", "Rows per computed batch",
                                    ["model"], buckets=BATCH_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("mlruntime_online_queue_depth",
                                 "Requests sent to a model host and not yet answered", ["model"],
                                 registry=self.registry)
        self.load_seconds = Gauge("mlruntime_online_model_load_seconds",
                                  "Seconds from a host's start to its Model answering", ["model"],
                                  registry=self.registry)

    def request(self, route: str, model: str, status: int, total_s: float,
                timings: dict[str, Any]) -> None:
        children = self._children.get((route, model, status))
        if children is None:   # the labelled series, looked up once (labels() locks and hashes)
            children = self._children[(route, model, status)] = (
                self.requests.labels(route, model, str(status)),
                self.latency.labels(model, "total"),
                [(self.latency.labels(model, phase), key) for phase, key in PHASES],
                self.batch_rows.labels(model))
        count, total, phases, batch_rows = children
        count.inc()
        total.observe(total_s)
        for child, key in phases:
            value = timings.get(key)
            if value is not None:
                child.observe(value / 1000.0)
        if timings.get("first") and isinstance(timings.get("batch_rows"), int):
            batch_rows.observe(timings["batch_rows"])   # once per batch

    def depth(self, model: str, value: int) -> None:
        self.queue_depth.labels(model).set(value)

    def loaded(self, host: Any) -> None:
        self.load_seconds.labels(host.model_id).set(host.started_s)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        if self.depths is not None:
            for model, value in self.depths().items():
                self.depth(model, value)
        return generate_latest(self.registry)
