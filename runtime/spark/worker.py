"""A long-lived Spark worker process: one SparkSession (one JVM) per process, runs sent to it one
at a time, each with the stages of `runtime.worker.Run`.

`python -m runtime.spark.worker --name NAME --config JSON [--home H] [--owner PID:START | --idle-s
S] [--max-runs N]`: it listens on the abstract socket NAME and speaks the pool protocol of warm
workers (runtime.pools): a connection takes it ({"op": "take"}), sends runs ({"op": "run", "spec":
PATH, ...}) and releases it. Frames to the holder are lines: b"C" + JSON (taken, ready, failed,
done) or b"L" + one line of the worker's output (its stdout and stderr and the JVM's, a pipe read
here), which the holder writes to the run's log. {"op": "cancel"} (or SIGINT) cancels the current
run: pyspark's handler cancels every Spark job, then KeyboardInterrupt unwinds the engine's code.
"""
from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import redaction
from ..runfiles import WorkerSpec
from ..errors import ConfigError, MLRuntimeError
from ..procs import unbuffered_std_streams
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
    """The process's Spark: the base session, and how many runs it has served."""

    def __init__(self) -> None:
        self.spark: Any = None
        self.effective: dict[str, Any] = {}
        self.startup_s = 0.0
        self.lifetime: Any = None   # runtime.pools.Lifetime: counts the runs

    @property
    def runs_served(self) -> int:
        return self.lifetime.runs if self.lifetime is not None else 0

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


class Server:
    """The worker as the pool protocol sees it (runtime.pools): it listens on its socket, is taken
    by one connection at a time, runs what that connection sends, and retires by the shared
    policy (max runs, idle seconds, its owner gone) or when asked to."""

    def __init__(self, worker: Worker, listener: socket.socket, args: argparse.Namespace) -> None:
        from ..pools import Lifetime, parse_owner

        self.worker, self.listener, self.args = worker, listener, args
        self.lifetime = worker.lifetime = Lifetime(max_runs=args.max_runs, idle_s=args.idle_s,
                                                   owner=parse_owner(args.owner))
        self.started = time.time()
        self.start_error: str | None = None
        self.taker: socket.socket | None = None
        self.running = False
        self.retiring: str | None = None
        self.jobs: queue.Queue = queue.Queue()
        self.run_mark = threading.Event()
        self._lock = threading.Lock()        # taker, running, retiring, the start's outcome
        self._send_lock = threading.Lock()   # one frame at a time on the taker's connection
        self.own_log = -1

    # --- output: the process's stdout and stderr (the JVM's too) go to the run's taker ----------

    def capture_output(self) -> None:
        """Fds 1 and 2 become a pipe read here: each line goes to the connection that holds the
        worker (its run's log), else to the worker's own log (what fd 1 was)."""
        self.own_log = os.dup(1)
        read, write = os.pipe()
        os.dup2(write, 1)
        os.dup2(write, 2)
        os.close(write)
        unbuffered_std_streams()
        threading.Thread(target=self._pump, args=(read,), name="output", daemon=True).start()

    def _pump(self, fd: int) -> None:
        mark = JOB_END_MARK.encode()
        with os.fdopen(fd, "rb") as pipe:
            for line in iter(pipe.readline, b""):
                if line.startswith(mark):
                    self.run_mark.set()
                    continue
                if not line.endswith(b"\n"):
                    line += b"\n"
                if not self.frame(b"L" + line):
                    try:
                        os.write(self.own_log, line)
                    except OSError:
                        pass

    def frame(self, data: bytes, conn: socket.socket | None = None) -> bool:
        """One frame to `conn` (the taker by default): b"L" + a log line, or b"C" + JSON."""
        with self._send_lock:
            target = conn or self.taker
            if target is None:
                return False
            try:
                target.sendall(data)
                return True
            except OSError:
                return False

    def event(self, message: dict[str, Any]) -> bool:
        """An event to the holder (ready, failed, done): a frame."""
        return self.frame(b"C" + (json.dumps(message, default=str) + "\n").encode())

    @staticmethod
    def reply(conn: socket.socket, message: dict[str, Any]) -> None:
        """The answer to a request: a plain JSON line (runtime.pools.ask reads it)."""
        try:
            conn.sendall((json.dumps(message, default=str) + "\n").encode())
        except OSError:
            pass

    def describe(self) -> dict[str, Any]:
        spark = self.worker.effective or {}
        config = self.args.config_obj
        return {**self.lifetime.describe(), "kind": "spark", "pid": os.getpid(),
                "home": self.args.home, "since": self.started,
                "state": ("failed" if self.start_error else "starting" if not spark else
                          "busy" if self.running or self.taker is not None else "idle"),
                "retiring": self.retiring, "master": config.master,
                "driverMemory": f"{config.driver_memory_mb}m",
                "summary": f"{config.master}, driver {config.driver_memory_mb} MB",
                "jvmPid": spark.get("jvmPid"), "startupS": round(self.worker.startup_s, 3),
                "spark": spark or None, "python": sys.executable}

    # --- the control thread: connections, requests, the lifetime --------------------------------

    def serve_connections(self) -> None:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, None)
        buffers: dict[socket.socket, bytes] = {}
        while True:
            for key, _ in sel.select(1.0):
                if key.data is None:
                    try:
                        conn, _ = self.listener.accept()
                    except OSError:
                        continue
                    if not _same_user(conn):
                        conn.close()
                        continue
                    buffers[conn] = b""
                    sel.register(conn, selectors.EVENT_READ, "conn")
                    continue
                conn = key.fileobj
                try:
                    chunk = conn.recv(1 << 16)
                except OSError:
                    chunk = b""
                if not chunk:
                    sel.unregister(conn)
                    buffers.pop(conn, None)
                    self._gone(conn)
                    continue
                data = buffers.get(conn, b"") + chunk
                *lines, buffers[conn] = data.split(b"\n")
                for line in lines:
                    if not self._request(conn, line):
                        sel.unregister(conn)
                        buffers.pop(conn, None)
                        conn.close()
                        break
            with self._lock:
                if self.retiring is None:
                    reason = self.lifetime.why_retire(busy=self.running or self.taker is not None)
                    if reason is not None:
                        self._retire(reason, sel)
                if self.retiring is not None and not self.running and self.taker is None:
                    self.jobs.put(None)
                    return
            if self.retiring is not None:
                try:
                    sel.unregister(self.listener)
                except (KeyError, ValueError):
                    pass

    def _request(self, conn: socket.socket, line: bytes) -> bool:
        """Answer one request; False: the connection is done with."""
        try:
            message = json.loads(line)
        except ValueError:
            self.reply(conn, {"error": "the request is not JSON"})
            return False
        op = message.get("op")
        with self._lock:
            if op == "ping":
                self.reply(conn, {"pong": self.describe()})
                return False
            if op == "shutdown":
                self.reply(conn, {"bye": True})
                self._retire("asked to shut down")
                return False
            if op == "take":
                if self.retiring is not None or self.start_error is not None:
                    self.reply(conn, {"retired": self.retiring or self.start_error})
                    return False
                if self.taker is not None or self.running:
                    self.reply(conn, {"busy": "it serves another run"})
                    return False
                self.lifetime.touch()
                with self._send_lock:   # the reply first: frames follow it
                    self.reply(conn, {"taken": self.describe(), "ready": bool(self.worker.effective)})
                    self.taker = conn
                return True
            if conn is not self.taker:
                self.reply(conn, {"error": f"{op!r} needs a taken worker ({{'op': 'take'}})"
                                  if op in ("run", "cancel", "release") else f"unknown op {op!r}"})
                return False
            if op == "run":
                self.running = True
                self.jobs.put(message)
                return True
            if op == "cancel":
                if self.running:   # pyspark's SIGINT handler cancels the jobs, then KeyboardInterrupt
                    os.kill(os.getpid(), signal.SIGINT)
                return True
            if op == "release":
                self._release()
                return False
            self.event({"error": f"unknown op {op!r}"})
            return True

    def _gone(self, conn: socket.socket) -> None:
        """A connection closed: its holder released the worker (a run it started goes on, into
        the worker's own log)."""
        with self._lock:
            if conn is self.taker:
                self._release()
        conn.close()

    def _release(self) -> None:
        with self._send_lock:
            self.taker = None
        self.lifetime.idle()

    def _retire(self, reason: str, sel: Any = None) -> None:
        if self.retiring is not None:
            return
        self.retiring = reason
        try:   # the name is free at once: a new worker of this shape can start
            self.listener.close()
        except OSError:
            pass
        print(f"spark worker {os.getpid()}: retiring: {reason}", flush=True)

    # --- the main thread: Spark, then the runs ----------------------------------------------------

    def main(self) -> int:
        threading.Thread(target=self.serve_connections, name="control", daemon=True).start()
        try:
            self.worker.start(self.args.config_obj)
        except BaseException as exc:   # the taker reports it as its run's failure
            traceback.print_exc(file=sys.stdout)
            from .errors import spark_message

            message = spark_message(exc) if is_spark_error(exc) else str(exc)
            sys.stdout.flush()
            with self._lock:
                self.start_error = f"{type(exc).__name__}: {message}"
                self.event({"event": "failed", "error": self.start_error})
                self._retire("Spark did not start")
            return 1
        sys.stdout.flush()
        with self._lock:
            self.lifetime.idle()
            self.event({"event": "ready", "pid": os.getpid(), "spark": self.worker.effective,
                        "startup_s": self.worker.startup_s})
        while True:
            try:
                message = self.jobs.get()
            except KeyboardInterrupt:  # a cancel that came after its run had ended
                continue
            if message is None:
                break
            reply = self._one_run(message)
            if not reply.get("healthy", True):
                with self._lock:
                    self._retire("its Spark context is not healthy after a run")
                break
        _stop(self.worker.spark)
        return 0

    def _one_run(self, message: dict[str, Any]) -> dict[str, Any]:
        reply: dict[str, Any] = {"event": "done", "run_id": message.get("run_id"), "state": "FAILED"}
        self.run_mark.clear()
        cwd = os.getcwd()
        try:
            if message.get("cwd"):
                os.chdir(message["cwd"])
            reply.update(self.worker.run(message))
        except KeyboardInterrupt:
            reply.update(state="ABORTED", healthy=self.worker.healthy())
        except BaseException as exc:  # a bug here must still answer the pool
            traceback.print_exc(file=sys.stdout)
            reply.update(error=f"{type(exc).__name__}: {exc}", healthy=self.worker.healthy())
        finally:
            for _ in range(3):  # a late SIGINT must not lose the answer
                try:
                    os.chdir(cwd)
                    print(f"{JOB_END_MARK}{message.get('run_id')}", flush=True)
                    self.run_mark.wait(5.0)   # the run's last lines are in its log
                    with self._lock:
                        self.running = False
                        retire = self.lifetime.served()
                        self.event(reply)
                        if retire is not None:
                            self._retire(retire)
                    break
                except KeyboardInterrupt:
                    continue
        return reply


def _same_user(conn: socket.socket) -> bool:
    from ..pools import peer

    try:
        return peer(conn)[1] == os.getuid()
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.spark.worker")
    parser.add_argument("--name", required=True, help="the abstract Unix socket name to listen on")
    parser.add_argument("--config", required=True, help="the SparkConfig, as JSON")
    parser.add_argument("--home", default=None, help="the runtime home it serves (what it lists)")
    parser.add_argument("--max-runs", type=int, default=200)
    parser.add_argument("--owner", help="PID[:START]: retire when that process is gone")
    parser.add_argument("--idle-s", type=float, default=0.0, help="retire after S idle seconds")
    args = parser.parse_args(argv)
    args.config_obj = SparkConfig.model_validate_json(args.config)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind("\0" + args.name)
    except OSError as exc:   # another worker of this slot is there first
        print(f"spark worker: {args.name} is taken ({exc}); not starting", flush=True)
        return 3
    listener.listen(16)
    server = Server(Worker(), listener, args)
    server.capture_output()
    faulthandler.enable(file=os.fdopen(os.dup(server.own_log), "w"))
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return server.main()


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
