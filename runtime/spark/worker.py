"""A long-lived Spark worker process: one SparkSession (one JVM) per process, runs sent to it one
at a time, each with the stages of `runtime.worker.Run`.

`python -m runtime.spark.worker --fd N`: N is a socket to the pool (JSON lines). Our stdout and
stderr are a pipe the pool copies into the current run's log. SIGINT cancels the current run:
pyspark's handler cancels every Spark job, then KeyboardInterrupt unwinds the engine's code.
"""
from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import queue
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import redaction
from ..backends import WorkerSpec
from ..errors import ConfigError, MLRuntimeError
from ..worker import EngineExit, Run, _confine_data, _summary, _write_result
from .config import SparkConfig
from .errors import is_spark_error, translate

if TYPE_CHECKING:
    import pandas as pd

    from ..engine import Engine, TaskContext

# Printed (alone on a line) after a run's last output, so the pool knows the run's log is complete.
JOB_END_MARK = "\x1emlruntime-run-end "

log = logging.getLogger("runtime.spark.worker")


def is_spark_frame(frame: Any) -> bool:
    return type(frame).__module__.startswith("pyspark.sql") and hasattr(frame, "write")


def rows_of(frame: Any) -> int:
    return frame.count() if is_spark_frame(frame) else len(frame)


class SparkRun(Run):
    """`runtime.worker.Run` with a SparkSession in the context, and Spark DataFrames counted and
    written by Spark (the base class counts with len() and writes with pandas)."""

    def __init__(self, spec: WorkerSpec, spark: Any) -> None:
        super().__init__(spec)
        self.spark = spark
        self.engine_ready_at: float | None = None
        self.engine: Engine | None = None

    def prepare(self) -> tuple[Engine, TaskContext]:
        engine, ctx = super().prepare()
        ctx.spark = self.spark
        self.engine = engine
        self.engine_ready_at = time.time()
        return engine, ctx

    def feature_pipeline(self, engine: Engine, ctx: TaskContext) -> None:
        if not getattr(engine, "saves_output", False):
            super().feature_pipeline(engine, ctx)
            return
        # A recipe's feature pipeline: its loader reads and its data saver writes (transformedDataSetId)
        data = self.load(engine, ctx, "trainingDataSetId")
        with self.stage("feature_pipeline"):
            features = engine.feature_pipeline(ctx, data)
        with self.stage("write_output"):
            self.result["output"] = engine.save_output(ctx, features)

    def end(self) -> None:
        """The engine's end of run (a recipe adapter leaves nothing of its recipe in the worker)."""
        end_run = getattr(self.engine, "end_run", None)
        if end_run is not None:
            try:
                end_run()
            except Exception:
                log.warning("run %s: the engine's end of run failed", self.spec.run_id, exc_info=True)

    def rows(self, frame: Any) -> int:
        return rows_of(frame)

    def describe(self, frame: Any) -> str:
        if is_spark_frame(frame):  # counting would run a Spark job just for a log line
            return f"Spark DataFrame, {len(frame.columns)} columns"
        return super().describe(frame)

    def write(self, frame: pd.DataFrame | Any, target: Path) -> None:
        if not is_spark_frame(frame):
            super().write(frame, target)
            return
        with self.stage("write_output"):
            suffix = target.suffix.lower()
            writer = frame.write.mode("overwrite")
            if suffix in (".parquet", ".pq"):
                writer.parquet(str(target))
                rows = self.spark.read.parquet(str(target)).count()  # footers only
            elif suffix == ".csv":
                writer.option("header", True).csv(str(target))
                rows = frame.count()
            else:
                raise ConfigError(f"Cannot write {target}: expected a .parquet or .csv file name")
        self.result["output"] = str(target)
        self.result["rows"] = rows
        log.info("wrote %d rows to %s (Spark)", rows, target)


class Worker:
    """The process's state: the base session, the socket, how many runs it has served."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._send_lock = threading.Lock()
        self.spark: Any = None
        self.effective: dict[str, Any] = {}
        self.startup_s = 0.0
        self.runs_served = 0

    def send(self, message: dict[str, Any]) -> None:
        data = (json.dumps(message, default=str) + "\n").encode()
        with self._send_lock:
            self.sock.sendall(data)

    def start(self, config: SparkConfig) -> None:
        from .session import build_session, effective_config

        started = time.perf_counter()
        config = _with_datasource(config)
        self.spark = build_session(config)
        self.spark.sparkContext.setLogLevel("WARN")
        self.startup_s = time.perf_counter() - started
        self.effective = effective_config(self.spark)

    def run(self, message: dict[str, Any]) -> dict[str, Any]:
        """One run, start to result.json; never raises (but a cancel may interrupt it)."""
        spec = WorkerSpec.read(Path(message["spec"]))
        # This run's secrets masked in what it prints and in result.json (runtime.redaction).
        redaction.install(redaction.Redactor(redaction.secret_values(spec.values,
                                                                     spec.secret_keys)))
        _confine_data(spec)
        started = time.perf_counter()
        # A session of its own per run (temp views, SQL settings), on the shared context.
        new_session_start = time.perf_counter()
        session = self.spark.newSession()
        new_session_s = time.perf_counter() - new_session_start
        run = SparkRun(spec, session)
        error: BaseException | None = None
        cancelled = False
        log.info("run %s: %s with engine %s on Spark %s (%s), worker pid %d, %s session",
                 spec.run_id, spec.mode, spec.engine, self.effective.get("master"),
                 self.effective.get("applicationId"), os.getpid(),
                 "warm" if self.runs_served else "new")
        try:
            engine, ctx = run.prepare()
            run.execute(engine, ctx)
        except KeyboardInterrupt:
            cancelled = True
        except EngineExit as exc:
            error = exc
        except MLRuntimeError as exc:
            error = exc
        except Exception as exc:
            traceback.print_exc(file=sys.stdout)
            error = exc
            if is_spark_error(exc):
                error = translate(exc, run_id=spec.run_id, mlinstance_id=message.get("mlinstance_id"))
                error.__cause__ = exc
        run.end()
        record = run.record(error)
        if cancelled:
            record["state"] = "ABORTED"
        submitted = message.get("submitted_at")
        record["backend"] = "pyspark"
        record["spark"] = {
            **self.effective,
            "workerPid": os.getpid(),
            "reusedSession": self.runs_served > 0,
            "runsBefore": self.runs_served,
            "sessionStartS": round(self.startup_s, 4),
            "newSessionS": round(new_session_s, 6),
            "dispatchToEngineS": (round(run.engine_ready_at - submitted, 4)
                                  if submitted and run.engine_ready_at else None),
            # a recipe: from submit to its data loader's load() (imports and run setup included)
            "dispatchToLoaderS": (round(loader_at - submitted, 4)
                                  if submitted and (loader_at := getattr(run.engine, "loader_reached_at", None))
                                  else None),
        }
        _write_result(run.run_dir, record)
        print(_summary(record, time.perf_counter() - started), flush=True)
        self.runs_served += 1
        return {"state": record["state"], "healthy": self.healthy()}

    def healthy(self) -> bool:
        try:
            self.spark.sparkContext.getConf().get("spark.app.id")
            return not self.spark.sparkContext._jsc.sc().isStopped()
        except Exception:
            return False


def _with_datasource(config: SparkConfig) -> SparkConfig:
    """`config` with the platform data source's jar on the classpath (compiled once, cached); a
    machine without a JDK runs without it, and a recipe that reads through it is told why."""
    from .datasource import DatasourceUnavailable, ensure_jar, jar_conf

    try:
        jar = ensure_jar()
    except DatasourceUnavailable as exc:
        log.warning("%s", exc.detail)
        return config
    return config.model_copy(update={"conf": jar_conf(config.conf, jar)})


def _reader(sock_file: Any, jobs: queue.Queue) -> None:
    for line in sock_file:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("op") == "run":
            jobs.put(message)
        elif message.get("op") == "close":
            break
    jobs.put(None)  # closed, or the pool's process is gone: either way, stop


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.spark.worker")
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args(argv)
    faulthandler.enable()
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sock = socket.socket(fileno=args.fd)
    sock_file = sock.makefile("rb")
    worker = Worker(sock)
    first = json.loads(sock_file.readline() or "{}")
    try:
        worker.start(SparkConfig.model_validate(first["config"]))
    except BaseException as exc:  # the pool reports it as the run's failure
        traceback.print_exc(file=sys.stdout)
        from .errors import spark_message

        message = spark_message(exc) if is_spark_error(exc) else str(exc)
        sys.stdout.flush()
        worker.send({"event": "failed", "error": f"{type(exc).__name__}: {message}"})
        return 1
    sys.stdout.flush()
    worker.send({"event": "ready", "pid": os.getpid(), "spark": worker.effective,
                 "startup_s": worker.startup_s})

    jobs: queue.Queue = queue.Queue()
    threading.Thread(target=_reader, args=(sock_file, jobs), name="control", daemon=True).start()
    while True:
        try:
            message = jobs.get()
        except KeyboardInterrupt:  # a cancel that came after its run had ended
            continue
        if message is None:
            break
        reply: dict[str, Any] = {"event": "done", "run_id": message.get("run_id"), "state": "FAILED"}
        try:
            reply.update(worker.run(message))
        except KeyboardInterrupt:
            reply.update(state="ABORTED", healthy=worker.healthy())
        except BaseException as exc:  # a bug here must still answer the pool
            traceback.print_exc(file=sys.stdout)
            reply.update(error=f"{type(exc).__name__}: {exc}", healthy=worker.healthy())
        finally:
            for _ in range(3):  # a late SIGINT must not lose the answer
                try:
                    print(f"{JOB_END_MARK}{message.get('run_id')}", flush=True)
                    worker.send(reply)
                    break
                except KeyboardInterrupt:
                    continue
        if not reply.get("healthy", True):
            break
    _stop(worker.spark)
    return 0


def _stop(spark: Any) -> None:
    """Stop the session, then the JVM itself: it may outlive a stopped context for a while."""
    from pyspark import SparkContext

    gateway = getattr(SparkContext, "_gateway", None)
    try:
        spark.stop()
    except Exception:
        pass
    jvm = getattr(gateway, "proc", None)
    if jvm is not None and jvm.poll() is None:
        jvm.terminate()
        try:
            jvm.wait(5)
        except Exception:
            jvm.kill()


if __name__ == "__main__":
    sys.exit(main())
