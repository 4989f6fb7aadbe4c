"""Memory benchmark: peak RSS and time of retail-sales `run score` and `run train` on synthetic data
of growing size, the chunked path beside today's whole-file path (`-p chunk_rows=0`) in one run.

    python benchmarks/bench_memory.py                     # 0.6M and 6.4M rows (~15 minutes)
    python benchmarks/bench_memory.py --sizes 0.6M --quick
    python benchmarks/bench_memory.py --sizes 0.6M,6.4M,64M --data /big/disk/bench-data
    python benchmarks/bench_memory.py --sizes 0.6M,6.4M --train-only
    python benchmarks/bench_memory.py --row-bytes        # the bytes a row takes, per path (~5 min)
    python benchmarks/bench_memory.py --cgroup-mb 2048 --sizes 2.1M   # in a 2 GB cgroup (root)

Sizes are rows of the whole synthetic data set (`run data retail --stores N`: 143 weeks a store,
so 0.6M is 4,475 stores and 6.4M is 44,755). 64M is ten copies of the 6.4M set with the store ids
shifted (generating it whole would need ~25 GB), scored on the chunked path only: the whole-file
path would need about 80 GB, ten times its 6.4M peak. For each size:

1. **score**: `run score` of `DSWRetailSales.parquet` (every row) with a model trained on the
   0.6M set, whole-file (`chunk_rows=0`) and chunked (the default chunk), `--repeats` times each,
   interleaved (median time, largest peak); the two outputs are compared row for row (they must
   be equal, bit for bit). Goal: chunked peak <= 1.5 GB at every
   size; chunked rows/s >= 0.9x the whole-file path's at 6.4M.
2. **train**: `run train` on `DSWRetailSales-Training.parquet` (1 epoch, batch 4096: memory does
   not grow with epochs), both paths; the feature matrix is training rows x inputs x 8 bytes
   (float64, as the features are built; the torch loop reads a float32 copy of it from disk).
   Goal: chunked peak <= 3x the feature matrix, printed both as the whole peak and as the peak
   above the floor (below).

`--row-bytes` measures what engines/retail_sales/sizing.py sizes chunks with: each path (score
whole / chunked, train whole / chunked) runs once per size in a fresh process, one chunk holding
all rows; its peak RSS (VmHWM, reset just before the stage) minus its RSS before the stage, over
the rows the stage's feature frame holds (a score's frame: the data's rows plus the model's
history rows it pulls in, which is what makes a 30-week scoring file cost 4x its rows).

`--cgroup-mb N` runs each score (whole-file, then the automatic default) inside a memory cgroup
of its own limited to N MB (v2 /sys/fs/cgroup/NAME/memory.max, else v1
/sys/fs/cgroup/memory/NAME/memory.limit_in_bytes; needs root), as a container with that limit
would: the `run` process moves itself in before it starts its worker, so both are counted. It
reports whether each run completed or was killed, and the cgroup's own peak (memory.peak, v1
memory.max_usage_in_bytes) beside the worker's peak from the run's system metrics.

Peak RSS is the largest of the `run` process and its worker (a helper process runs `run` and reads
RUSAGE_CHILDREN, which covers the worker the CLI waited for); runs are cold (MLRUNTIME_WARM=0).
The floor is the RSS of a process that only imports the worker's libraries (torch, pandas,
pyarrow), measured in the same run.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import table  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
CONFIG = ROOT / "configs" / "retail-sales.json"
SIZES = {"0.6M": 4475, "2.1M": 15000, "6.4M": 44755, "64M": 447550}
REPLICATED = {"64M": ("6.4M", 10)}   # built from a smaller set: (base size, copies)
WHOLE_PATH_MAX_ROWS = 10_000_000      # today's path is not run above this (it would need ~80 GB)
SCORE_FILES = {"all": "DSWRetailSales.parquet", "scoring": "DSWRetailSales-Scoring.parquet"}
SCORE_PEAK_GOAL_MB = 1536
SCORE_SPEED_GOAL = 0.9
TRAIN_PEAK_GOAL = 3.0

# Runs `run ...` and prints the largest RSS of it and its waited-for descendants, in KiB.
_MEASURE = ("import resource, subprocess, sys\n"
            "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
            "sys.stderr.write(done.stdout + done.stderr)\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
            "sys.exit(done.returncode)\n")
_FLOOR = ("import resource, numpy, pandas, pyarrow.parquet, torch\n"
          "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")}
    env["MLRUNTIME_WARM"] = "0"
    return env


def measured(argv: list[str], log: Path) -> tuple[float, float, str]:
    """(wall seconds, peak RSS in MB, the run's last stdout line) of `argv`."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _MEASURE, *argv], capture_output=True, text=True,
                          env=_env(), cwd=ROOT)
    wall = time.perf_counter() - started
    log.write_text(done.stderr)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed (log: {log}):\n{done.stderr[-3000:]}")
    lines = [line for line in done.stderr.splitlines() if line.startswith("{")]
    return wall, int(done.stdout.split()[-1]) / 1024, lines[-1] if lines else ""


def import_floor_mb() -> float:
    done = subprocess.run([sys.executable, "-c", _FLOOR], capture_output=True, text=True,
                          env=_env(), cwd=ROOT, check=True)
    return int(done.stdout.split()[-1]) / 1024


def make_data(size: str, root: Path) -> Path:
    folder = root / size
    if (folder / "DSWRetailSales.parquet").exists():
        return folder
    if size in REPLICATED:
        base, copies = REPLICATED[size]
        _replicate(make_data(base, root) / "DSWRetailSales.parquet", copies, SIZES[base],
                   folder / "DSWRetailSales.parquet")
        return folder
    subprocess.run(["run", "data", "retail", "--out", str(folder), "--stores", str(SIZES[size])],
                   check=True, env=_env(), cwd=ROOT, capture_output=True)
    return folder


def _replicate(source: Path, copies: int, stores: int, target: Path) -> None:
    """`copies` copies of `source`, store ids shifted by `stores` each time, a row group at once."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    reader = pq.ParquetFile(str(source))
    with pq.ParquetWriter(str(tmp), reader.schema_arrow, compression="snappy") as writer:
        for copy in range(copies):
            for group in range(reader.num_row_groups):
                table = reader.read_row_group(group)
                at = table.schema.get_field_index("store")
                shifted = pc.add(table.column(at), pa.scalar(copy * stores, table.schema.field(at).type))
                writer.write_table(table.set_column(at, "store", shifted))
    tmp.replace(target)


def rows_of(path: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(str(path)).metadata.num_rows


def same_scores(a: Path, b: Path) -> str:
    """"equal" when the two score files hold the same rows and values, bit for bit."""
    import pyarrow.parquet as pq

    left, right = pq.ParquetFile(str(a)), pq.ParquetFile(str(b))
    if left.metadata.num_rows != right.metadata.num_rows:
        return f"DIFFERENT: {left.metadata.num_rows} vs {right.metadata.num_rows} rows"
    columns = ["date", "store", "prediction"]
    l_iter = left.iter_batches(batch_size=1 << 20, columns=columns)
    r_iter = right.iter_batches(batch_size=1 << 20, columns=columns)
    import numpy as np

    pending_l, pending_r = None, None
    while True:
        pending_l = next(l_iter, None) if pending_l is None else pending_l
        pending_r = next(r_iter, None) if pending_r is None else pending_r
        if pending_l is None or pending_r is None:
            return "equal" if pending_l is None and pending_r is None else "DIFFERENT: lengths"
        n = min(pending_l.num_rows, pending_r.num_rows)
        for name in columns:
            x = pending_l.column(name).slice(0, n).to_numpy(zero_copy_only=False)
            y = pending_r.column(name).slice(0, n).to_numpy(zero_copy_only=False)
            if name == "prediction":
                same = np.array_equal(x.view("int64"), y.view("int64"))   # bit for bit, NaN too
            else:
                same = np.array_equal(x, y)
            if not same:
                return f"DIFFERENT in {name}"
        pending_l = pending_l.slice(n) if n < pending_l.num_rows else None
        pending_r = pending_r.slice(n) if n < pending_r.num_rows else None


def train(home: Path, data: Path, chunked: bool, logs: Path, tag: str) -> dict[str, Any]:
    argv = ["run", "train", str(CONFIG), "--home", str(home), "--json", "--cold",
            "-p", f"trainingDataSetId={data}", "-p", "epochs=1", "-p", "batch_size=4096",
            "-p", "validation_every_epochs=0"] + ([] if chunked else ["-p", "chunk_rows=0"])
    wall, peak, last = measured(argv, logs / f"train-{tag}.log")
    result = json.loads(last)
    meta = _model_meta(home, result)
    matrix_mb = meta["training_rows"] * len(meta["inputs"]) * 8 / 2 ** 20
    return {"wall_s": wall, "peak_mb": peak, "model_id": result.get("modelId"),
            "training_rows": meta["training_rows"], "matrix_mb": matrix_mb}


def _model_meta(home: Path, result: dict[str, Any]) -> dict[str, Any]:
    found = sorted(home.rglob("model.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise RuntimeError(f"no model.json under {home} after train: {result}")
    return json.loads(found[-1].read_text())


def score(home: Path, model_id: str, data: Path, out: Path, chunked: bool, logs: Path,
          tag: str) -> dict[str, Any]:
    argv = ["run", "score", str(CONFIG), "--home", str(home), "--json", "--cold",
            "--model", model_id, "-p", f"scoringDataSetId={data}",
            "-p", f"scoringResultsDataSetId={out}"] + ([] if chunked else ["-p", "chunk_rows=0"])
    wall, peak, _ = measured(argv, logs / f"score-{tag}.log")
    return {"wall_s": wall, "peak_mb": peak}


ROW_BYTES_STORES = (1000, 3000)   # --row-bytes: 143k and 429k rows (30-week scoring files: 30k, 90k)
ROW_BYTES_MODES = ("score-whole", "score-chunked", "train-whole", "train-chunked")


def frame_rows(data: Path, history: Path) -> int:
    """Rows of a score's feature frame: the data's rows, plus the model's history rows of the
    same stores dated before each store's first row in the data (and every history row of a store
    the data lacks), as features_with_history combines them."""
    import pandas as pd

    from engines.retail_sales.features import parse_dates

    rows = pd.read_parquet(data, columns=["store", "date"])
    first = rows.assign(date=parse_dates(rows["date"])).groupby("store")["date"].min()
    past = pd.read_parquet(history, columns=["store", "date"])
    starts = past["store"].map(first)
    return len(rows) + int((starts.isna() | (parse_dates(past["date"]) < starts)).sum())


def row_bytes(data_root: Path, work: Path) -> list[dict[str, Any]]:
    """Each path's peak above its RSS before the stage, over the rows it held (see --row-bytes)."""
    from engines.retail_sales import RetailSalesEngine, write_retail_dataset
    from runtime.engine import default_context

    probe = BENCH_DIR / "_row_bytes_probe.py"
    tiny = write_retail_dataset(data_root / "rb-tiny", seed=9, stores=3)
    results = []
    for stores in ROW_BYTES_STORES:
        files = write_retail_dataset(data_root / f"rb-{stores}", seed=stores, stores=stores)
        engine = RetailSalesEngine()
        ctx = default_context(engine, "train", {"epochs": 1, "batch_size": 4096, "chunk_rows": 0},
                              threads=2, artifact_dir=work)
        model_dir = work / f"model-{stores}"
        engine.save_model(ctx, engine.train(ctx, engine.feature_pipeline(
            ctx, engine.load_data(ctx, str(files["training.parquet"])))), model_dir)
        cases = [("score-whole", "scoring.parquet"), ("score-chunked", "scoring.parquet"),
                 ("score-whole", "all.parquet"), ("score-chunked", "all.parquet"),
                 ("train-whole", "training.parquet"), ("train-chunked", "training.parquet")]
        for mode, name in cases:
            out = work / f"probe-{stores}-{mode}-{name}"
            warm = tiny[name]
            done = subprocess.run([sys.executable, str(probe), mode, str(files[name]), str(model_dir),
                                   str(out), str(warm)], capture_output=True, text=True, env=_env(),
                                  cwd=ROOT)
            if done.returncode != 0:
                raise RuntimeError(f"probe {mode} {name} failed:\n{done.stderr[-3000:]}")
            measured_now = json.loads(done.stdout.strip().splitlines()[-1])
            shutil.rmtree(out, ignore_errors=True)
            rows = rows_of(files[name])
            held = frame_rows(files[name], model_dir / "history.parquet") if mode.startswith("score") \
                else rows
            above = measured_now["peak"] - measured_now["base"]
            results.append({"stores": stores, "mode": mode, "file": name, "rows": rows,
                            "frame_rows": held, "base_mb": measured_now["base"] / 2 ** 20,
                            "peak_mb": measured_now["peak"] / 2 ** 20, "above_mb": above / 2 ** 20,
                            "bytes_per_row": above / rows, "bytes_per_frame_row": above / held})
            r = results[-1]
            print(f"  {stores} stores {mode:14s} {name:17s} {rows:>9,} rows {held:>9,} frame rows: "
                  f"peak {r['peak_mb']:.0f} MB, {r['above_mb']:.0f} MB above {r['base_mb']:.0f}; "
                  f"{r['bytes_per_row']:,.0f} B/row, {r['bytes_per_frame_row']:,.0f} B/frame row",
                  flush=True)
    return results


class Cgroup:
    """A memory cgroup of our own, limited to `limit_mb` (v2, else v1); removed on exit."""

    def __init__(self, limit_mb: int) -> None:
        import uuid

        name = f"mlrt-bench-{uuid.uuid4().hex[:8]}"
        for folder, limit, peak in ((Path("/sys/fs/cgroup") / name, "memory.max", "memory.peak"),
                                    (Path("/sys/fs/cgroup/memory") / name, "memory.limit_in_bytes",
                                     "memory.max_usage_in_bytes")):
            if not (folder.parent / "cgroup.procs").exists():
                continue
            try:
                folder.mkdir()
            except OSError:
                continue
            try:
                (folder / limit).write_text(str(limit_mb << 20))
            except OSError:
                folder.rmdir()
                continue
            self.folder, self.peak_file = folder, folder / peak
            self.version = "v2" if limit == "memory.max" else "v1"
            return
        raise RuntimeError("cannot create a memory cgroup here (needs root and a writable "
                           "/sys/fs/cgroup or /sys/fs/cgroup/memory)")

    def wrap(self, argv: list[str]) -> list[str]:
        """argv run by a shell that first moves itself into the cgroup."""
        return ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(self.folder / "cgroup.procs"), *argv]

    def peak_mb(self) -> float:
        try:
            return int(self.peak_file.read_text()) / 2 ** 20
        except (OSError, ValueError):
            return float("nan")

    def oom_kills(self) -> int:
        for name in ("memory.events", "memory.oom_control"):
            try:
                for line in (self.folder / name).read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
            except OSError:
                continue
        return 0

    def remove(self) -> None:
        for _ in range(50):   # the last process may still be exiting
            try:
                self.folder.rmdir()
                return
            except OSError:
                time.sleep(0.2)


def contained_score(home: Path, model_id: str, data: Path, out: Path, chunked: bool, logs: Path,
                    tag: str, limit_mb: int) -> dict[str, Any]:
    """One `run score` inside a fresh cgroup of `limit_mb`: completed or killed, and its peaks."""
    argv = ["run", "score", str(CONFIG), "--home", str(home), "--json", "--cold",
            "--model", model_id, "-p", f"scoringDataSetId={data}",
            "-p", f"scoringResultsDataSetId={out}"] + ([] if chunked else ["-p", "chunk_rows=0"])
    group = Cgroup(limit_mb)
    try:
        started = time.perf_counter()
        done = subprocess.run(group.wrap([sys.executable, "-c", _MEASURE, *argv]), capture_output=True,
                              text=True, env=_env(), cwd=ROOT)
        wall = time.perf_counter() - started
        (logs / f"score-{tag}.log").write_text(done.stderr)
        lines = [line for line in done.stderr.splitlines() if line.startswith("{")]
        summary = json.loads(lines[-1]) if lines else {}
        system = summary.get("system") or {}
        logs_now = sorted(home.rglob("run.log"), key=lambda p: p.stat().st_mtime)
        text = logs_now[-1].read_text(errors="replace") if logs_now else done.stderr
        chose = [line.split("retail-sales: ", 1)[-1] for line in text.splitlines()
                 if "scoring data" in line]
        return {"completed": done.returncode == 0, "state": summary.get("state"), "wall_s": wall,
                "cgroup_peak_mb": group.peak_mb(), "oom_kills": group.oom_kills(),
                "worker_peak_mb": system.get("peak_memory_mb"), "cgroup": group.version,
                "reason": summary.get("reason") or "", "choice": chose[-1] if chose else "",
                "rows": rows_of(out) if done.returncode == 0 and out.exists() else None}
    finally:
        group.remove()


def cgroup_runs(sizes: list[str], limit_mb: int, data_root: Path, home: Path, work: Path,
                logs: Path, model_size: str, score_file: str) -> list[dict[str, Any]]:
    small = make_data(model_size, data_root)
    base = train(home, small / "DSWRetailSales-Training.parquet", True, logs, "model")
    results = []
    for size in sizes:
        data = make_data(size, data_root) / score_file
        for side in ("whole", "chunked"):
            out = work / f"{size}-{side}-cg.parquet"
            r = contained_score(home, base["model_id"], data, out, side == "chunked", logs,
                                f"{size}-{side}-cgroup", limit_mb)
            r.update(size=size, side="whole file (chunk_rows=0)" if side == "whole" else "automatic")
            out.unlink(missing_ok=True)
            results.append(r)
            print(f"  {size} {r['side']:26s}: {'completed' if r['completed'] else 'FAILED'} "
                  f"({r['state']}), {r['wall_s']:.0f} s, cgroup peak {r['cgroup_peak_mb']:.0f} MB, "
                  f"worker peak {r['worker_peak_mb']} MB (system metrics), OOM kills {r['oom_kills']}"
                  + (f"; {r['reason'][:160]}" if not r["completed"] else ""), flush=True)
            if r["choice"]:
                print(f"    log: {r['choice'][:220]}")
    return results


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    import statistics

    return {"wall_s": statistics.median(r["wall_s"] for r in runs),
            "peak_mb": max(r["peak_mb"] for r in runs), "runs": runs}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="0.6M,6.4M", help=f"of {', '.join(SIZES)}")
    parser.add_argument("--data", type=Path, help="where the data sets are made and kept "
                        "(default: a temporary folder, removed)")
    parser.add_argument("--quick", action="store_true", help="score only (no training runs)")
    parser.add_argument("--train-only", action="store_true", help="training runs only (no scoring)")
    parser.add_argument("--row-bytes", action="store_true",
                        help="measure the bytes a row takes on each path (sizing.py's figures) only")
    parser.add_argument("--model-size", default="0.6M", choices=[k for k in SIZES if k != "64M"],
                        help="the data set whose training file trains the scoring model (its "
                             "history: 104 weeks of each of its stores)")
    parser.add_argument("--score-file", default="all", choices=sorted(SCORE_FILES),
                        help="all: every row (DSWRetailSales.parquet); scoring: the last 30 weeks "
                             "(DSWRetailSales-Scoring.parquet), whose features hold 3.5x as many "
                             "history rows of a model trained on the same size")
    parser.add_argument("--cgroup-mb", type=int, default=0,
                        help="score each size whole and automatic inside a memory cgroup of this "
                             "many MB (root; a container's limit) only")
    parser.add_argument("--repeats", type=int, default=2,
                        help="score runs of each path per size, interleaved (median time, max peak)")
    args = parser.parse_args(argv)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"unknown size(s) {', '.join(unknown)}; choose from {', '.join(SIZES)}")
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    data_root = args.data or work / "data"
    logs = work / "logs"
    logs.mkdir(parents=True)
    home = work / "home"
    report: dict[str, Any] = {"started": dt.datetime.now(dt.timezone.utc).isoformat(),
                              "machine": platform.platform(), "cpus": os.cpu_count(),
                              "load_avg": os.getloadavg(), "sizes": {}}
    failed = True
    try:
        if args.row_bytes:
            print(f"bytes a row takes, each path in a fresh process (load average "
                  f"{os.getloadavg()[0]:.1f}):")
            report["row_bytes"] = row_bytes(data_root, work)
            failed = False
            return 0
        if args.cgroup_mb:
            print(f"scoring in a {args.cgroup_mb} MB cgroup (load average {os.getloadavg()[0]:.1f}):")
            report["cgroup"] = cgroup_runs(sizes, args.cgroup_mb, data_root, home, work, logs,
                                           args.model_size, SCORE_FILES[args.score_file])
            failed = False
            return 0
        floor = import_floor_mb()
        report["import_floor_mb"] = floor
        print(f"import floor (numpy, pandas, pyarrow, torch): {floor:.0f} MB")
        small = make_data(args.model_size, data_root)
        base = train(home, small / "DSWRetailSales-Training.parquet", True, logs, "model")
        print(f"model for scoring: trained on {args.model_size} ({base['training_rows']} training rows)")
        scored_file = SCORE_FILES[args.score_file]
        score_rows, train_rows = [], []
        for size in sizes:
            started = time.perf_counter()
            folder = make_data(size, data_root)
            rows = rows_of(folder / scored_file)
            print(f"\n{size}: {rows:,} rows (data ready in {time.perf_counter() - started:.0f} s)")
            entry: dict[str, Any] = {"size": size, "rows": rows}
            whole_possible = rows <= WHOLE_PATH_MAX_ROWS
            out_whole, out_chunked = work / f"{size}-whole.parquet", work / f"{size}-chunked.parquet"
            # Interleaved (whole, chunked, whole, ...): the machine is shared; medians reported.
            runs: dict[str, list[dict[str, Any]]] = {"whole": [], "chunked": []}
            for repeat in range(0 if args.train_only else args.repeats):
                for side in (["whole"] if whole_possible else []) + ["chunked"]:
                    runs[side].append(score(home, base["model_id"], folder / scored_file,
                                            out_whole if side == "whole" else out_chunked,
                                            side == "chunked", logs, f"{size}-{side}-{repeat}"))
            if not args.train_only:
                score_rows.append(_score_entry(entry, runs, whole_possible, out_whole, out_chunked))
                print(table(SCORE_HEADER, score_rows[-1:]))
            training = folder / "DSWRetailSales-Training.parquet"
            if not args.quick and training.exists():
                entry["train_whole"] = train(home, training, False, logs, f"{size}-whole") \
                    if whole_possible else None
                entry["train_chunked"] = train(home, training, True, logs, f"{size}-chunked")
                train_rows.append(_train_row(size, entry["train_whole"], entry["train_chunked"], floor))
                print(table(TRAIN_HEADER, train_rows[-1:]))
            report["sizes"][size] = entry
        if score_rows:
            print("\nscore: whole-file path (chunk_rows=0) vs chunked (default chunk)")
            print(table(SCORE_HEADER, score_rows))
        if train_rows:
            print(f"\ntrain: peak RSS vs the feature matrix (training rows x inputs x 8 bytes); "
                  f"'above floor': peak minus the {floor:.0f} MB of a process that only imports "
                  "the libraries")
            print(table(TRAIN_HEADER, train_rows))
        print(f"\ngoals: score peak <= {SCORE_PEAK_GOAL_MB} MB at every size; score speed >= "
              f"{SCORE_SPEED_GOAL}x at 6.4M; train peak <= {TRAIN_PEAK_GOAL}x the matrix")
        failed = False
    finally:
        RESULTS_DIR.mkdir(exist_ok=True)
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        (RESULTS_DIR / f"memory-{stamp}.json").write_text(json.dumps(report, indent=2, default=str))
        if failed:
            print(f"kept {work} (logs/) for a look", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


SCORE_HEADER = ["size", "rows", "whole s", "whole MB", "chunked s", "chunked MB", "speed x",
                "chunked rows/s", "scores"]
TRAIN_HEADER = ["size", "train rows", "matrix MB", "whole s", "whole MB", "whole x", "chunked s",
                "chunked MB", "chunked x", "chunked MB above floor", "x above floor"]


def _score_entry(entry: dict[str, Any], runs: dict[str, list[dict[str, Any]]], whole_possible: bool,
                 out_whole: Path, out_chunked: Path) -> list[str]:
    """The size's score figures into `entry`; its row of the score table."""
    if whole_possible:
        entry["score_whole"] = _median(runs["whole"])
    entry["score_chunked"] = _median(runs["chunked"])
    entry["same_scores"] = same_scores(out_whole, out_chunked) if whole_possible else "n/a"
    for path in (out_whole, out_chunked):
        path.unlink(missing_ok=True)
    whole, chunked = entry.get("score_whole"), entry["score_chunked"]
    speed = (whole["wall_s"] / chunked["wall_s"]) if whole else None
    return [entry.get("size", ""), f"{entry['rows']:,}",
            f"{whole['wall_s']:.1f}" if whole else "not run",
            f"{whole['peak_mb']:.0f}" if whole else "-",
            f"{chunked['wall_s']:.1f}", f"{chunked['peak_mb']:.0f}",
            f"{speed:.2f}" if speed else "-", f"{entry['rows'] / chunked['wall_s']:,.0f}",
            entry["same_scores"]]


def _train_row(size: str, tw: dict[str, Any] | None, tc: dict[str, Any], floor: float) -> list[str]:
    return [size, f"{tc['training_rows']:,}", f"{tc['matrix_mb']:.0f}",
            f"{tw['wall_s']:.1f}" if tw else "not run", f"{tw['peak_mb']:.0f}" if tw else "-",
            f"{tw['peak_mb'] / tw['matrix_mb']:.1f}" if tw else "-",
            f"{tc['wall_s']:.1f}", f"{tc['peak_mb']:.0f}", f"{tc['peak_mb'] / tc['matrix_mb']:.1f}",
            f"{tc['peak_mb'] - floor:.0f}", f"{(tc['peak_mb'] - floor) / tc['matrix_mb']:.1f}"]


if __name__ == "__main__":
    sys.exit(main())
