"""The worker: `python -m runtime.worker SPEC.json` runs one task of one engine in this process.

It always leaves `run_dir/result.json` behind (unless killed), exits 0 on success and 1 when the
engine or its configuration failed; the backend turns that into the run's outcome.
"""
from __future__ import annotations

import faulthandler
import json
import logging
import os
import random
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from .runfiles import RESULT_FILE, WorkerSpec
from .datasets import (DATASETS_FILE, ENV_DATASETS_FILE, resolve_dataset, use_catalog,
                       write_catalog_file, write_dataset)
from .engine import Engine, Metric, TaskContext, load_engine, parse_params
from . import redaction
from .data_roots import ENV_RUN_DATA_ROOTS
from .errors import ConfigError, MLRuntimeError
from .metrics_series import SeriesProgress, SeriesWriter, split_metric_args
from .sysmetrics import start_sampler
from .tasks import FEATURE_PIPELINE, SCORE, TRAIN

if TYPE_CHECKING:
    import pandas as pd

# Keys naming the run's data sets: the worker reads and writes them, so an engine need not declare them.
DATA_SET_KEYS = ("trainingDataSetId", "scoringDataSetId", "scoringResultsDataSetId", "featuresDataSetId")
MODEL_SUBDIR = "model"
DEFAULT_FEATURES_FILE = "features.parquet"
DEFAULT_SCORES_FILE = "scores.parquet"

log = logging.getLogger("runtime.worker")


class EngineExit(Exception):
    """Engine code called sys.exit(); the worker records it and exits with the same code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class Run:
    """One task's execution: the engine, its context, and what the run has produced so far."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.run_dir = Path(spec.run_dir)
        self.metrics: dict[str, Metric] = {}
        self.durations_s: dict[str, float] = {}
        self.result: dict[str, Any] = {"model_dir": None, "output": None, "rows": None}
        self._torch_ready = False
        # Warnings an engine logs (ctx.logger.warning) reach the run's status message.
        self.warnings = _WarningCollector()
        logging.getLogger("runtime.engine").addHandler(self.warnings)
        _use_datasets(spec, self.run_dir)
        # Per-step metrics and live progress, flushed to the run folder by a thread.
        self.series = SeriesWriter(self.run_dir)
        # CPU, memory, disk and GPU use of this run's processes, as system/... series.
        self.system, self.system_summary = start_sampler(
            self.series, interval_s=spec.resources.system_metrics_interval_s, cores=spec.threads,
            device=spec.device)

    # --- setup -------------------------------------------------------------------------------

    def prepare(self) -> tuple[Engine, TaskContext]:
        spec = self.spec
        with self.stage("load_engine"):
            engine_cls = load_engine(spec.engine)
        params = parse_params(engine_cls, spec.mode, _engine_values(engine_cls, spec.mode, spec.values))
        logger = logging.getLogger(f"runtime.engine.{engine_cls.name}")
        ctx = TaskContext(
            task=spec.mode, params=params, device=spec.device, threads=spec.threads, logger=logger,
            log_metric=self.log_metric,
            progress=lambda total, desc: SeriesProgress(total, desc, self.series),
            artifact_dir=self.run_dir, model_digest=spec.model_digest)
        self.sync_torch()
        return engine_cls(), ctx

    def log_metric(self, name: str, value: float, step: int | str | None = None,
                   valueType: str | None = None) -> None:
        """With a step, one point of the metric's series (metrics.jsonl, never blocking); without,
        the run's final value (an Insight). `log_metric(name, value, "double")` still works."""
        step, value_type = split_metric_args(step, valueType)
        if step is None:
            self.metrics[name] = Metric(name=name, value=float(value), valueType=value_type)
        else:
            self.series.point(name, value, step)

    def sync_torch(self) -> None:
        """Thread count and seed for torch, once the engine has imported it (never import it here)."""
        if self._torch_ready or "torch" not in sys.modules:
            return
        torch = sys.modules["torch"]
        torch.set_num_threads(max(1, self.spec.threads))
        if self.spec.seed is not None:
            torch.manual_seed(self.spec.seed)
        self._torch_ready = True

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        log.info("stage %s ...", name)
        self.series.stage(name)
        start = time.perf_counter()
        try:
            yield
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
            raise EngineExit(code or 1, f"engine code called sys.exit({exc.code!r}) in stage {name}") from exc
        finally:
            elapsed = time.perf_counter() - start
            self.durations_s[name] = round(self.durations_s.get(name, 0.0) + elapsed, 6)
            self.sync_torch()
        log.info("stage %s done in %.3f s", name, elapsed)

    # --- the tasks ---------------------------------------------------------------------------

    def execute(self, engine: Engine, ctx: TaskContext) -> None:
        mode = self.spec.mode
        if mode == FEATURE_PIPELINE:
            self.feature_pipeline(engine, ctx)
        elif mode == TRAIN:
            self.train(engine, ctx)
        elif mode == SCORE:
            self.score(engine, ctx)
        else:  # WorkerSpec validates the mode; this guards a new task name added without a branch
            raise ConfigError(f"The worker cannot run mode {mode!r}")

    def feature_pipeline(self, engine: Engine, ctx: TaskContext) -> None:
        values = self.spec.values
        key = "trainingDataSetId" if values.get("trainingDataSetId") else "scoringDataSetId"
        data = self.load(engine, ctx, key)
        with self.stage("feature_pipeline"):
            features = engine.feature_pipeline(ctx, data)
        target = _output_path(values.get("featuresDataSetId"), self.run_dir / DEFAULT_FEATURES_FILE)
        self.write(features, target)

    def train(self, engine: Engine, ctx: TaskContext) -> None:
        data = self.load(engine, ctx, "trainingDataSetId")
        with self.stage("feature_pipeline"):
            features = engine.feature_pipeline(ctx, data)
        with self.stage("train"):
            model = engine.train(ctx, features)
        model_dir = self.run_dir / MODEL_SUBDIR
        with self.stage("save_model"):
            engine.save_model(ctx, model, model_dir)
        self.result["model_dir"] = str(model_dir)
        if getattr(engine, "model_digest", None):   # recipes: what the score run must find again
            self.result["model_digest"] = engine.model_digest
        with self.stage("evaluate"):
            metrics = engine.evaluate(ctx, model, data if _scores_raw(engine) else features)
        for metric in metrics or []:
            self.log_metric(metric.name, metric.value, metric.valueType)
        self.result["rows"] = self.rows(features)

    def score(self, engine: Engine, ctx: TaskContext) -> None:
        model_dir = self.spec.model_dir
        if model_dir is None:
            raise ConfigError("A score run needs the trained model's folder (model_dir); none was given")
        if not Path(model_dir).is_dir():
            raise ConfigError(f"Model folder not found: {model_dir}")
        with self.stage("load_model"):
            model = engine.load_model(ctx, Path(model_dir))
        self.result["model_dir"] = str(model_dir)
        data = self.load(engine, ctx, "scoringDataSetId")
        if not _scores_raw(engine):
            with self.stage("feature_pipeline"):
                data = engine.feature_pipeline(ctx, data)
        with self.stage("score"):
            predictions = engine.score(ctx, model, data)
        if getattr(engine, "saves_output", False):   # a recipe's own data saver writes it
            with self.stage("write_output"):
                self.result["output"] = engine.save_output(ctx, predictions)
            self.result["rows"] = self.rows(predictions)
            return
        target = _output_path(self.spec.values.get("scoringResultsDataSetId"),
                              self.run_dir / DEFAULT_SCORES_FILE)
        self.write(predictions, target)

    # --- data in and out ---------------------------------------------------------------------

    def load(self, engine: Engine, ctx: TaskContext, key: str) -> pd.DataFrame:
        value = self.spec.values.get(key)
        if not value and getattr(engine, "loads_data_sets", False):   # a recipe reads its own
            with self.stage("load_data"):
                return engine.load_data(ctx, "")
        if not value:
            raise ConfigError(f"The {self.spec.mode} task needs {key} (a registered data set id, or "
                              "a .parquet, .csv or .jsonl path); none was given")
        ref = resolve_dataset(str(value))   # a catalog id, a path or a file:// URI
        if ref.path is not None and not ref.path.exists():
            raise ConfigError(f"Data set {key} {str(value)!r} not found: {ref.path.absolute()}")
        uri = str(ref.path) if ref.path is not None else ref.uri
        with self.stage("load_data"):
            data = engine.load_data(ctx, uri)
        log.info("loaded %s: %s from %s", key, self.describe(data), uri)
        if type(data).__module__.startswith("pandas"):   # a Spark frame would need a job to count
            self.series.bar("rows in", len(data), 0)
        return data

    # Hooks for frames that are not pandas (a pyspark run counts and describes Spark DataFrames).

    def rows(self, frame: Any) -> int | None:
        return None if frame is None else len(frame)

    def describe(self, frame: Any) -> str:
        if frame is None:   # a class-based recipe reads its data itself
            return "read by the recipe"
        return f"{len(frame)} rows, {len(frame.columns)} columns"

    def write(self, frame: pd.DataFrame, target: Path) -> None:
        with self.stage("write_output"):
            # In the format of the file name or the catalog entry; a folder gets a new batch file.
            target = write_dataset(frame, resolve_dataset(str(target)))
        self.result["output"] = str(target)
        self.result["rows"] = len(frame)
        self.series.bar("rows out", len(frame), 0)   # the terminal's progress line shows it
        log.info("wrote %d rows to %s", len(frame), target)

    # --- the record ----------------------------------------------------------------------------

    def record(self, error: BaseException | None) -> dict[str, Any]:
        if self.system is not None:
            self.system_summary = self.system.stop()
        self.series.close()   # the record is the run's end: the last points reach the file first
        logging.getLogger("runtime.engine").removeHandler(self.warnings)   # a warm worker goes on
        return {
            "warnings": self.warnings.messages,
            "state": "FAILED" if error is not None else "DONE",
            "run_id": self.spec.run_id,
            "engine": self.spec.engine,
            "mode": self.spec.mode,
            "metrics": [m.model_dump() for m in self.metrics.values()],
            **self.result,
            "durations_s": self.durations_s,
            "system": self.system_summary,
            "error": None if error is None else {
                "type": "SystemExit" if isinstance(error, EngineExit) else type(error).__name__,
                "message": str(error),
                "traceback": "".join(traceback.format_exception(error)),
            },
        }


class _WarningCollector(logging.Handler):
    """Keeps the messages of warnings logged under `runtime.engine` (the engines' loggers)."""

    MAX_MESSAGES = 20

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.messages) < self.MAX_MESSAGES:
            try:
                self.messages.append(record.getMessage())
            except Exception:   # a malformed log call must not fail the run
                self.handleError(record)


def _engine_values(engine: type[Engine], mode: str, values: dict[str, Any]) -> dict[str, Any]:
    """`values` less the data-set keys the engine's schema does not declare (the worker uses them)."""
    schema = engine.params.get(mode)
    declared: set[str] = set()
    if schema is not None:
        for name, field in schema.model_fields.items():
            declared |= {name, field.alias or name}
    return {k: v for k, v in values.items() if k not in DATA_SET_KEYS or k in declared}


def _use_datasets(spec: WorkerSpec, run_dir: Path) -> None:
    """The sandbox's data set catalog for this run: resolve_dataset uses it, and recipe code (or
    any process the run starts) finds it in the JSON file named by MLRUNTIME_DATASETS_FILE."""
    use_catalog(spec.datasets)
    os.environ[ENV_DATASETS_FILE] = str(write_catalog_file(spec.datasets, run_dir / DATASETS_FILE))


def _scores_raw(engine: Engine) -> bool:
    """Whether the engine's score/evaluate take the loaded rows rather than feature_pipeline's output.

    An engine says so with `score_input = "raw"` (one that, like retail-sales, rebuilds its features
    with the model's stored history); the default is Sensei's order, features first."""
    return getattr(engine, "score_input", "features") == "raw"


def _output_path(value: Any, default: Path) -> Path:
    if not value:
        return default
    path = resolve_dataset(str(value)).path   # a catalog id, a path or a file:// URI
    if path is None:
        raise ConfigError(f"Cannot write to {value!r}: only local paths and file:// URIs are written")
    return path


def _confine_data(spec: WorkerSpec) -> None:
    """Every data set this run's processes read or write through runtime.datasets stays under the
    server's data roots (or in the run folder): checked again at the moment of I/O."""
    if spec.data_roots:
        os.environ[ENV_RUN_DATA_ROOTS] = os.pathsep.join([*spec.data_roots, str(spec.run_dir)])
    else:
        os.environ.pop(ENV_RUN_DATA_ROOTS, None)


def _write_result(run_dir: Path, record: dict[str, Any]) -> None:
    record = redaction.active().document(record)   # an error message may quote a secret
    path = run_dir / RESULT_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp, path)  # the backend never reads half a file


def _summary(record: dict[str, Any], wall_s: float) -> str:
    lines = [f"run {record['run_id']} {record['state']}: {record['mode']} with {record['engine']} "
             f"in {wall_s:.2f} s"]
    for metric in record["metrics"]:
        lines.append(f"  metric {metric['name']} = {metric['value']:.6g}")
    for key in ("model_dir", "output", "rows"):
        if record.get(key) is not None:
            lines.append(f"  {key}: {record[key]}")
    system = record.get("system") or {}
    if system.get("sampled"):
        lines.append("  system: " + ", ".join(f"{label} {system[key]:g}{unit}" for key, label, unit in (
            ("peak_memory_mb", "peak memory", " MB"), ("mean_cpu_percent", "mean CPU", "%"),
            ("mean_gpu_percent", "mean GPU", "%")) if system.get(key) is not None))
    if record["error"]:
        lines.append(f"  error: {record['error']['type']}: {record['error']['message']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None, *, warm: dict[str, Any] | None = None) -> int:
    """Run the spec named by `argv`. `warm` describes the warm parent this process was forked
    from (runtime.forkserver), None for a cold start."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m runtime.worker SPEC.json", file=sys.stderr)
        return 2
    # A native crash still leaves the Python stack in the log.
    faulthandler.enable()
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        spec = WorkerSpec.read(Path(argv[0]))
    except Exception as exc:  # no run folder to report into: say it and stop
        print(f"worker: invalid spec {argv[0]}: {exc}", file=sys.stderr)
        return 2
    if spec.secret_keys:   # secrets never reach the log or result.json (runtime.redaction)
        redaction.install(redaction.Redactor(redaction.secret_values(spec.values, spec.secret_keys)))
        for handler in logging.getLogger().handlers:
            if isinstance(handler, logging.StreamHandler):
                handler.setStream(sys.stdout)
    _confine_data(spec)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(name, str(spec.threads))  # before any BLAS is imported
    if warm is not None:   # the parent imported BLAS and OpenMP with one thread: set ours
        _limit_loaded_pools(spec.threads)
    if spec.seed is not None:
        random.seed(spec.seed)

    run = Run(spec)
    start = time.perf_counter()
    error: BaseException | None = None
    exit_code = 0
    log.info("run %s: %s with engine %s on %s, %d threads", spec.run_id, spec.mode, spec.engine,
             spec.device, spec.threads)
    if warm is not None:
        log.info("warm start: forked from parent %s (its run %s; %s modules preloaded)",
                 warm.get("parent"), warm.get("runs"), warm.get("preloaded"))
    try:
        if spec.seed is not None:
            import numpy
            numpy.random.seed(spec.seed % 2**32)
        engine, ctx = run.prepare()
        run.execute(engine, ctx)
    except EngineExit as exc:
        error, exit_code = exc, exc.code
    except MLRuntimeError as exc:  # a configuration problem: its message says it all
        error, exit_code = exc, 1
    except Exception as exc:
        error, exit_code = exc, 1
        traceback.print_exc(file=sys.stdout)
    record = run.record(error)
    _write_result(run.run_dir, record)
    print(_summary(record, time.perf_counter() - start), flush=True)
    return exit_code


# A warm parent's threadpoolctl.ThreadpoolController over the BLAS and OpenMP libraries it loaded
# (runtime.forkserver); None: found here, when needed.
THREAD_POOLS: Any = None


def _limit_loaded_pools(threads: int) -> None:
    """Thread counts for pools loaded before this process knew its run (a warm child): BLAS and
    OpenMP through threadpoolctl, numexpr directly; torch is set once the engine runs
    (Run.sync_torch)."""
    if THREAD_POOLS is not None:
        THREAD_POOLS.limit(limits=max(1, threads))
    else:
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:
            log.warning("threadpoolctl is not installed: BLAS keeps the warm parent's single thread")
        else:
            threadpool_limits(limits=max(1, threads))
    numexpr = sys.modules.get("numexpr")
    if numexpr is not None:
        numexpr.set_num_threads(max(1, threads))


def teardown() -> None:
    """The result is written: flush the log and leave without the interpreter's teardown of every
    module the engine imported (seconds with pandas, scipy and scikit-learn loaded on a busy host,
    paid by every run for nothing). The caller then calls os._exit."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()


if __name__ == "__main__":
    _code = main()
    teardown()
    os._exit(_code)
