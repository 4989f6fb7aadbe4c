"""Sweep overhead on the CPU (issue 11): a 4-run `run sweep` of the noop engine with --parallel 2
vs four `run train` calls started by hand two at a time (the same four parameter values), wall
time of each, alternating, median of the rounds. Target: sweep <= 1.1x the hand-run baseline.

    python benchmarks/bench_sweep.py [--rounds 3] [--sleep-ms 0]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VALUES = ("a", "b", "c", "d")


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "runtime.cli.main", *args]


def sweep_once(env: dict[str, str], target: Path) -> float:
    start = time.perf_counter()
    result = subprocess.run(_cmd("sweep", "train", str(target), "-p", "echo=" + ",".join(VALUES),
                                 "--parallel", "2", "--metric", "rows", "--json"),
                            cwd=REPO, env=env, capture_output=True, text=True)
    took = time.perf_counter() - start
    rows = json.loads(result.stdout.strip().splitlines()[-1])["rows"] if result.stdout else []
    if result.returncode or [r["state"] for r in rows] != ["DONE"] * 4:
        raise SystemExit(f"sweep failed: {result.stderr[-2000:]}")
    return took


def by_hand_once(env: dict[str, str], target: Path) -> float:
    start = time.perf_counter()
    for pair in (VALUES[:2], VALUES[2:]):
        procs = [subprocess.Popen(_cmd("train", str(target), "-p", f"echo={v}", "--quiet",
                                       "--json"), cwd=REPO, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for v in pair]
        for proc in procs:
            out, err = proc.communicate()
            if proc.returncode or json.loads(out.strip().splitlines()[-1])["state"] != "DONE":
                raise SystemExit(f"run train failed: {err[-2000:]}")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sleep-ms", type=int, default=0, help="noop's pause per stage")
    parser.add_argument("--out", type=Path,
                        default=REPO / "benchmarks" / "results" / "bench_sweep.json")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    data = work / "tiny.csv"
    data.write_text("a,b\n1,2\n3,4\n")
    target = work / "noop.json"
    target.write_text(json.dumps({"name": "noop", "engineId": "noop", "tasks": [
        {"name": "train", "parameters": [{"key": "trainingDataSetId", "value": str(data)},
                                         {"key": "sleep_ms", "value": str(args.sleep_ms)}]}]}))
    env = {k: v for k, v in os.environ.items() if k != "MLRUNTIME_MAX_CONCURRENT_RUNS"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    sweeps, hands = [], []
    for i in range(args.rounds):
        env_s = {**env, "MLRUNTIME_HOME": str(work / "home-sweep")}
        env_h = {**env, "MLRUNTIME_HOME": str(work / "home-hand")}
        if i % 2:   # alternate which goes first
            hands.append(by_hand_once(env_h, target))
            sweeps.append(sweep_once(env_s, target))
        else:
            sweeps.append(sweep_once(env_s, target))
            hands.append(by_hand_once(env_h, target))
        print(f"round {i + 1}: sweep {sweeps[-1]:.2f} s, by hand {hands[-1]:.2f} s", flush=True)
    sweep_s, hand_s = statistics.median(sweeps), statistics.median(hands)
    ratio = sweep_s / hand_s
    report = {"runs": 4, "parallel": 2, "sleep_ms": args.sleep_ms, "sweep_s": sweeps,
              "by_hand_s": hands, "median_sweep_s": sweep_s, "median_by_hand_s": hand_s,
              "ratio": ratio, "target": 1.1, "cpus": len(os.sched_getaffinity(0))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"4-run noop sweep, --parallel 2: {sweep_s:.2f} s vs four run train two at a time "
          f"{hand_s:.2f} s -> {ratio:.3f}x (target <= 1.1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
