"""What sampling a run's system metrics costs (runtime.sysmetrics): the sampler's own CPU time,
as a share of one core, while it samples a busy process group every second.

    python benchmarks/bench_sysmetrics.py              # 20 s per case, under 2 minutes
    python benchmarks/bench_sysmetrics.py --seconds 10

Target (issue 31): <= 1% of a core while sampling. The group sampled is this process and
`--children` children (each spinning two threads), as a worker with a data loader or a Spark
driver's JVM would be. Measured two ways: the sampler thread's CPU time (time.thread_time inside
it) and this whole process's CPU time over the same wait, against the same wait with no sampler
(the baseline: what the process costs idle).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _common import table  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
# A child with two threads that mostly wait: what a sample costs grows with the processes and
# threads it reads, not with how busy they are (and this machine is shared: nothing spins).
CHILD = ("import threading, time\n"
         "def tick():\n"
         "    while True:\n"
         "        sum(range(20000)); time.sleep(0.05)\n"
         "for _ in range(2):\n"
         "    threading.Thread(target=tick, daemon=True).start()\n"
         "threading.Event().wait()\n")


def measure(seconds: float, interval_s: float, children: int, sample: bool) -> dict[str, float]:
    from runtime.metrics_series import SeriesWriter
    from runtime.sysmetrics import SystemSampler

    procs = [subprocess.Popen([sys.executable, "-c", CHILD]) for _ in range(children)]
    folder = Path(tempfile.mkdtemp(prefix="bench-sysmetrics-"))
    try:
        time.sleep(0.5)
        writer = SeriesWriter(folder)
        sampler = SystemSampler(writer, interval_s=interval_s, cores=os.cpu_count() or 1) if sample else None
        cpu0, wall0 = time.process_time(), time.monotonic()
        if sampler is not None:
            sampler.start()
        time.sleep(seconds)
        summary = sampler.stop() if sampler is not None else {}
        writer.close()
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
        lines = (folder / "metrics.jsonl").read_text().count("\n") if (folder / "metrics.jsonl").exists() else 0
    finally:
        for p in procs:
            p.kill()
            p.wait()
    return {"wall_s": round(wall, 2), "process_cpu_s": round(cpu, 4),
            "sampler_cpu_s": summary.get("overhead_cpu_s", 0.0), "samples": summary.get("samples", 0),
            "points_written": lines, "group_cpu_percent": summary.get("mean_cpu_percent"),
            "process_pct_of_core": round(100 * cpu / wall, 3),
            "sampler_pct_of_core": round(100 * summary.get("overhead_cpu_s", 0.0) / wall, 3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    results: dict = {"machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                                 "load_avg_at_start": os.getloadavg()}}
    cases = {"baseline: no sampler, 2 children": (1.0, 2, False),
             "1 s, worker alone": (1.0, 0, True),
             "1 s, 2 children": (1.0, 2, True),
             "1 s, 8 children": (1.0, 8, True),
             "0.1 s, 2 children (10x the default rate)": (0.1, 2, True)}
    for label, (interval, children, sample) in cases.items():
        results[label] = measure(args.seconds, interval, children, sample)
        print(label, results[label], flush=True)
    base = results["baseline: no sampler, 2 children"]["process_pct_of_core"]
    for label in cases:
        results[label]["process_pct_over_baseline"] = round(results[label]["process_pct_of_core"] - base, 3)
    print("\nSystem metrics sampling overhead (target <= 1% of a core at the default 1 s)")
    print(table(["case", "samples", "sampler % of a core", "process % of a core", "over baseline"],
                [[k, v["samples"], v["sampler_pct_of_core"], v["process_pct_of_core"],
                  v["process_pct_over_baseline"]] for k, v in results.items() if k != "machine"]))
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"sysmetrics-{time.strftime('%Y%m%d-%H%M%S')}.json"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    path.write_text(json.dumps({**results, "commit": commit}, indent=2))
    print(f"results in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
