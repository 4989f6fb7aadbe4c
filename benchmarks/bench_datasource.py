"""The platform data source vs Spark's own Parquet reader, on one 1M-row Parquet data set.

Both sides in the same `local[2]` session, alternating, each timed from `load()` to the last row
materialised (`write.format("noop")`, which reads every column of every row and writes nothing):
  baseline     spark.read.parquet(path)
  datasource   spark.read.format("com.adobe.platform.query").option(QSOption.datasetId(), id)
               with `id` registered in the run's catalog (what a recipe's data loader does)
The ratio is baseline time / data source time (1.0: as fast; target >= 0.8).

    .venv/bin/python benchmarks/bench_datasource.py [--rows 1000000] [--repeats 5] [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import table  # noqa: E402

TARGET_RATIO = 0.8


def write_data(path: Path, rows: int) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(7)
    frame = pd.DataFrame({
        "store": rng.integers(1, 46, rows, dtype=np.int32),
        "week": rng.integers(1, 53, rows, dtype=np.int32),
        "weeklySales": rng.normal(1e6, 2e5, rows),
        "temperature": rng.normal(60, 15, rows),
        "cpi": rng.normal(200, 10, rows),
        "isHoliday": rng.random(rows) < 0.07,
        "storeType": rng.choice(np.array(["A", "B", "C"]), rows),
    })
    frame.to_parquet(path, index=False, row_group_size=131072)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    from pyspark.sql import SparkSession

    from runtime.spark.datasource import FORMAT, ensure_jar, jar_conf, publish_catalog

    with tempfile.TemporaryDirectory(prefix="bench-datasource-") as tmp:
        path = Path(tmp) / "retail-1m.parquet"
        write_data(path, args.rows)
        started = time.perf_counter()
        jar = ensure_jar()
        jar_s = time.perf_counter() - started
        builder = (SparkSession.builder.master("local[2]").config("spark.driver.memory", "2g")
                   .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
                   .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1"))
        for key, value in jar_conf({}, jar).items():
            builder = builder.config(key, value)
        spark = builder.getOrCreate()
        spark.sparkContext.setLogLevel("ERROR")
        publish_catalog(spark, {"bench-retail": {"uri": path.as_uri(), "format": "parquet"}})
        qs = spark.sparkContext._jvm.com.adobe.platform.query.QSOption

        def baseline() -> int:
            frame = spark.read.parquet(str(path))
            frame.write.format("noop").mode("overwrite").save()
            return len(frame.columns)

        def datasource() -> int:
            frame = (spark.read.format(FORMAT).option(qs.datasetId(), "bench-retail")
                     .option(qs.mode(), "batch").load())
            frame.write.format("noop").mode("overwrite").save()
            return len(frame.columns)

        rows_seen = spark.read.format(FORMAT).option(qs.datasetId(), "bench-retail").load().count()
        assert rows_seen == args.rows, rows_seen
        for warm in (baseline, datasource):   # JIT and file cache for both
            warm()
        times: dict[str, list[float]] = {"baseline": [], "datasource": []}
        for _ in range(args.repeats):
            for name, call in (("baseline", baseline), ("datasource", datasource)):
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
        spark.stop()

    base, ours = statistics.median(times["baseline"]), statistics.median(times["datasource"])
    ratio = base / ours
    result = {"rows": args.rows, "repeats": args.repeats, "jar_ready_s": round(jar_s, 3),
              "baseline_median_s": round(base, 4), "datasource_median_s": round(ours, 4),
              "baseline_s": [round(t, 4) for t in times["baseline"]],
              "datasource_s": [round(t, 4) for t in times["datasource"]],
              "ratio": round(ratio, 3), "target": TARGET_RATIO, "pass": ratio >= TARGET_RATIO}
    if args.json:
        print(json.dumps(result))
    else:
        print(table(["read of 1 data set", "median s", "rows/s"], [
            ["spark.read.parquet (baseline)", f"{base:.3f}", f"{args.rows / base:,.0f}"],
            ["format com.adobe.platform.query", f"{ours:.3f}", f"{args.rows / ours:,.0f}"]]))
        print(f"ratio {ratio:.2f} (target >= {TARGET_RATIO}): {'PASS' if result['pass'] else 'FAIL'}")
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
