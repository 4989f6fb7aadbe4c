"""Each MLService's online traffic as the runs page shows it: requests, errors and the p50/p99
latency since the server started (the last SAMPLES requests), and the same per BUCKET_S-second
bucket over the last WINDOW_S seconds, for its charts. Kept per org and sandbox: a caller sees
its own sandbox's services only. Recording is a few dictionary and list operations a request."""
from __future__ import annotations

import time
from collections import deque
from typing import Any, Optional

SAMPLES = 2000           # latencies kept per MLService for its overall p50/p99
BUCKET_S = 5             # the charts' resolution
WINDOW_S = 600           # how far back the charts reach
BUCKET_SAMPLES = 1000    # latencies kept per bucket for its p50/p99


class _Service:
    __slots__ = ("requests", "errors", "latencies", "model_id", "buckets")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.latencies: deque[float] = deque(maxlen=SAMPLES)
        self.model_id: Optional[str] = None
        # [bucket start (epoch s), requests, errors, latencies in ms]
        self.buckets: deque[list[Any]] = deque(maxlen=WINDOW_S // BUCKET_S)


class Traffic:
    def __init__(self) -> None:
        self.services: dict[tuple[str, str, str], _Service] = {}

    def record(self, scope: Any, service_id: str, model_id: Optional[str], status: int,
               total_s: float, now: Optional[float] = None) -> None:
        key = (getattr(scope, "org", ""), getattr(scope, "sandbox", ""), service_id)
        stats = self.services.get(key)
        if stats is None:
            stats = self.services[key] = _Service()
        ms = total_s * 1000
        failed = status >= 400
        stats.requests += 1
        stats.errors += failed
        stats.latencies.append(ms)
        stats.model_id = model_id
        start = int((time.time() if now is None else now) // BUCKET_S) * BUCKET_S
        buckets = stats.buckets
        if not buckets or buckets[-1][0] != start:
            buckets.append([start, 0, 0, []])
        bucket = buckets[-1]
        bucket[1] += 1
        bucket[2] += failed
        if len(bucket[3]) < BUCKET_SAMPLES:
            bucket[3].append(ms)

    def summary(self, scope: Any = None, now: Optional[float] = None) -> dict[str, Any]:
        """Per MLService id: requests, errors, p50Ms, p99Ms, modelId, and `series`: per bucket
        its start `t` (epoch s), `requestsPerS`, `errorsPerS`, `p50Ms` and `p99Ms` (buckets
        without requests are zeros and nulls, so a chart shows the gaps)."""
        now = time.time() if now is None else now
        out = {}
        for (org, sandbox, service_id), stats in list(self.services.items()):
            if scope is not None and (org, sandbox) != (scope.org, scope.sandbox):
                continue
            latencies = sorted(stats.latencies)
            out[service_id] = {"requests": stats.requests, "errors": stats.errors,
                               "modelId": stats.model_id, "p50Ms": quantile(latencies, 0.5),
                               "p99Ms": quantile(latencies, 0.99),
                               "series": _series(list(stats.buckets), now)}
        return out


def _series(buckets: list[list[Any]], now: float) -> dict[str, list[Any]]:
    series: dict[str, list[Any]] = {"t": [], "requestsPerS": [], "errorsPerS": [], "p50Ms": [],
                                    "p99Ms": []}
    if not buckets:
        return series
    last = int(now // BUCKET_S) * BUCKET_S
    first = max(buckets[0][0], last - WINDOW_S + BUCKET_S)
    by_start = {b[0]: b for b in buckets}
    for start in range(first, last + BUCKET_S, BUCKET_S):
        bucket = by_start.get(start)
        # the current bucket is partial: its rate is over the seconds it has had so far
        span = BUCKET_S if start < last else max(1.0, now - start)
        latencies = sorted(bucket[3]) if bucket else []
        series["t"].append(start)
        series["requestsPerS"].append(round(bucket[1] / span, 3) if bucket else 0)
        series["errorsPerS"].append(round(bucket[2] / span, 3) if bucket else 0)
        series["p50Ms"].append(quantile(latencies, 0.5))
        series["p99Ms"].append(quantile(latencies, 0.99))
    return series


def quantile(values: list[float], q: float) -> Optional[float]:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(q * len(values)))], 3)
