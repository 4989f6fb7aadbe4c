"""The long soak, on demand: many runs posted at once through a real `run serve`, random cancels,
random worker kills, and the server SIGKILLed and restarted in the middle (tests/supervision/
soak.py; the test suite runs a one-minute version).

    python benchmarks/bench_soak.py                     # N=40, 8 cancels, 6 worker kills
    python benchmarks/bench_soak.py --runs 100 --cancels 20 --kills 15 --seed 3

Afterwards every run must be DONE, FAILED or ABORTED with a reason, every DONE train run must have
exactly one Model, no worker may be left and the SQLite file must pass PRAGMA integrity_check.
Baseline: the same runs with no chaos (no cancels, kills or restart) on a fresh home, so the
chaos run's time is read as a ratio to an undisturbed drain of the same queue.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "supervision"))

from soak import soak  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--cancels", type=int, default=8)
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument("--max-sleep-ms", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    timeout = 60.0 + 15.0 * args.runs
    baseline = None
    if not args.no_baseline:
        with tempfile.TemporaryDirectory(prefix="soak-base-") as tmp:
            baseline = soak(Path(tmp), runs=args.runs, cancels=0, worker_kills=0, restarts=0,
                            max_sleep_ms=args.max_sleep_ms, seed=args.seed, timeout_s=timeout)
        print("baseline (no chaos): " + baseline.line())
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        report = soak(Path(tmp), runs=args.runs, cancels=args.cancels, worker_kills=args.kills,
                      max_sleep_ms=args.max_sleep_ms, seed=args.seed, timeout_s=timeout)
    print("with chaos:          " + report.line())
    if baseline is not None:
        print(f"time ratio chaos / baseline: {report.seconds / baseline.seconds:.2f}x")
    for problem in report.problems:
        print("  PROBLEM " + problem)
    ok = not report.problems and not report.leftover_workers and report.integrity == "ok"
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
