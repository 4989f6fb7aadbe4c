"""The short soak (about a minute): see soak.py. benchmarks/bench_soak.py runs a longer one."""
from __future__ import annotations

from soak import soak


def test_soak_every_run_ends_with_a_reason_and_nothing_is_left_behind(tmp_path):
    report = soak(tmp_path, runs=10, cancels=3, worker_kills=2, max_sleep_ms=1200, seed=9)
    print(report.line())
    assert report.problems == [], report.line()
    assert report.leftover_workers == [] and report.integrity == "ok", report.line()
    assert report.server_kills == 1 and report.cancels >= 1 and report.worker_kills >= 1
    assert sum(report.states.values()) == report.runs
