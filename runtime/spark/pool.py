"""The warm-session pool: long-lived Spark worker processes, one SparkSession (one JVM) each, keyed
by the resource shape (master, every spark.* setting, driver memory included, and the environment).

A run takes an idle worker of its shape or starts a new one; a different driver memory is a
different key, so a different JVM, never a reused one. A worker that crashes takes only its run
with it. Idle workers are closed after `idle_timeout_s`, and every worker when the pool closes
(at interpreter exit for the process-wide pool). A worker whose pool process dies sees its socket
close and exits.
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any, Mapping, TextIO

from ..errors import ExecutionError
from .config import SparkConfig

__all__ = ["ENV_IDLE_S", "LogSink", "PoolWorker", "SparkWorkerPool", "default_pool"]

ENV_IDLE_S = "MLRUNTIME_SPARK_IDLE_S"
DEFAULT_IDLE_TIMEOUT_S = 600.0
START_TIMEOUT_S = 180.0
CLOSE_TIMEOUT_S = 10.0
_MARK = b"\x1emlruntime-run-end "


class LogSink:
    """Where a worker's output goes while it serves one run: the run's log, and live to `echo`."""

    def __init__(self, log: IO[bytes], echo: TextIO | None = None) -> None:
        self.log, self.echo = log, echo

    def write(self, line: bytes) -> None:
        self.log.write(line)
        if self.echo is not None:
            try:
                self.echo.write(line.decode(errors="replace"))
                self.echo.flush()
            except (OSError, ValueError):  # a closed console must not stop the log
                pass


class PoolWorker:
    """One Spark worker process, seen from the pool."""

    def __init__(self, config: SparkConfig, env: Mapping[str, str], key: str, log_dir: Path,
                 sink: LogSink | None) -> None:
        self.config, self.key = config, key
        self.state = "starting"        # starting -> idle <-> busy -> closed
        self.last_used = time.monotonic()
        self.runs_served = 0
        self.effective: dict[str, Any] | None = None
        self.startup_s: float | None = None
        self.start_error: str | None = None
        self._sink = sink
        self._sink_lock = threading.Lock()
        self._ready = threading.Event()
        self._done = threading.Event()
        self._end_mark = threading.Event()
        self._reply: dict[str, Any] | None = None
        self._send_lock = threading.Lock()

        log_dir.mkdir(parents=True, exist_ok=True)
        ours, theirs = socket.socketpair()
        full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        full_env.setdefault("PYSPARK_PYTHON", sys.executable)  # UDF workers: this interpreter
        try:
            self.proc = subprocess.Popen(
                [full_env.get("PYSPARK_DRIVER_PYTHON") or sys.executable, "-m", "runtime.spark.worker",
                 "--fd", str(theirs.fileno())],
                env=full_env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, pass_fds=(theirs.fileno(),), start_new_session=True)
        except OSError as exc:
            ours.close()
            raise ExecutionError(f"Cannot start a Spark worker: {exc}") from exc
        finally:
            theirs.close()
        self.pid = self.proc.pid
        self._own_log = open(log_dir / f"spark-worker-{self.pid}.log", "ab", buffering=0)
        self._sock = ours
        self._send({"op": "start", "config": config.model_dump(mode="json")})
        threading.Thread(target=self._pump, name=f"spark-worker-{self.pid}-out", daemon=True).start()
        threading.Thread(target=self._read, name=f"spark-worker-{self.pid}-ctl", daemon=True).start()

    # --- the process's two channels -----------------------------------------------------------

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, b""):
            if line.startswith(_MARK):
                self._end_mark.set()
                continue
            with self._sink_lock:
                target = self._sink
                try:
                    (target or self._own_log).write(line)
                except (OSError, ValueError):
                    pass
        self._end_mark.set()

    def _read(self) -> None:
        try:
            self._read_messages()
        except OSError:  # a killed worker resets the connection when it had unread data
            pass
        # The socket closed: the process has ended (or is about to).
        if not self._ready.is_set() and self.start_error is None:
            self.start_error = f"the Spark worker exited while starting ({self._exit_text()})"
        self._ready.set()
        self._done.set()

    def _read_messages(self) -> None:
        for line in self._sock.makefile("rb"):
            try:
                message = json.loads(line)
            except ValueError:
                continue
            event = message.get("event")
            if event == "ready":
                self.effective = message.get("spark")
                self.startup_s = message.get("startup_s")
                self._ready.set()
            elif event == "failed":
                self.start_error = message.get("error")
                self._ready.set()
            elif event == "done":
                self._reply = message
                self._done.set()

    def _send(self, message: dict[str, Any]) -> None:
        with self._send_lock:
            self._sock.sendall((json.dumps(message) + "\n").encode())

    def _exit_text(self) -> str:
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "still running"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"

    # --- what the pool and the run handle use ---------------------------------------------------

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def set_sink(self, sink: LogSink | None) -> None:
        with self._sink_lock:
            self._sink = sink

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        if not self._ready.wait(timeout):
            self.kill()
            raise ExecutionError(f"The Spark worker (pid {self.pid}) did not start within {timeout:g} s")
        if self.start_error is not None:
            raise ExecutionError(f"Spark could not start ({self.config.master}): {self.start_error}")

    def run(self, message: dict[str, Any]) -> dict[str, Any] | None:
        """Send one run and wait for its answer; None when the worker died first."""
        self._done.clear()
        self._end_mark.clear()
        self._reply = None
        try:
            self._send(message)
        except OSError:
            return None
        self._done.wait()
        self._end_mark.wait(5.0)  # the run's last log lines, which travel on the other channel
        return self._reply

    def interrupt(self) -> None:
        """SIGINT: pyspark cancels every Spark job; the engine's code gets KeyboardInterrupt."""
        try:
            os.kill(self.pid, signal.SIGINT)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """The worker and its JVM, at once (they share a process group)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        self.state = "closed"
        try:
            self._send({"op": "close"})
        except OSError:
            pass
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
        self.kill()  # what is left of the group (the JVM, if spark.stop hung)
        self.proc.wait()
        try:
            self._sock.close()
        except OSError:
            pass
        self._own_log.close()

    def describe(self) -> dict[str, Any]:
        return {"pid": self.pid, "state": self.state, "master": self.config.master,
                "runsServed": self.runs_served, "spark": self.effective}


class SparkWorkerPool:
    """Warm Spark workers by resource shape. Thread-safe; one run per worker at a time."""

    def __init__(self, *, idle_timeout_s: float | None = None, log_dir: Path | None = None) -> None:
        if idle_timeout_s is None:
            idle_timeout_s = float(os.environ.get(ENV_IDLE_S, DEFAULT_IDLE_TIMEOUT_S))
        self.idle_timeout_s = idle_timeout_s
        self.log_dir = log_dir or Path(tempfile.gettempdir()) / f"mlruntime-spark-{os.getuid()}"
        self._workers: list[PoolWorker] = []
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._reaper: threading.Thread | None = None

    def acquire(self, config: SparkConfig, env: Mapping[str, str], sink: LogSink | None = None
                ) -> tuple[PoolWorker, bool]:
        """(a worker of this shape, marked busy, whether it was already warm). A new worker may
        still be starting: call `wait_ready` before sending it a run."""
        key = config.key(env)
        with self._lock:
            if self._closed.is_set():
                raise ExecutionError("The Spark worker pool is closed")
            for worker in self._workers:
                if worker.key == key and worker.state == "idle" and worker.alive:
                    worker.state = "busy"
                    worker.set_sink(sink)
                    return worker, True
            worker = PoolWorker(config, env, key, self.log_dir, sink)
            worker.state = "busy"
            self._workers.append(worker)
            self._start_reaper()
            return worker, False

    def release(self, worker: PoolWorker, *, healthy: bool = True) -> None:
        """The run is over: keep the worker warm, or close it when it is unhealthy or dead."""
        worker.set_sink(None)
        worker.runs_served += 1
        if healthy and worker.alive and not self._closed.is_set():
            with self._lock:
                worker.state = "idle"
                worker.last_used = time.monotonic()
            return
        self.discard(worker)

    def discard(self, worker: PoolWorker) -> None:
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
        worker.set_sink(None)
        if worker.alive:
            worker.kill()
        worker.close(timeout_s=1.0)

    def workers(self) -> list[dict[str, Any]]:
        with self._lock:
            return [w.describe() for w in self._workers]

    def close_idle(self, older_than_s: float | None = None) -> int:
        """Close idle workers unused for `older_than_s` (the idle timeout by default)."""
        limit = self.idle_timeout_s if older_than_s is None else older_than_s
        now = time.monotonic()
        with self._lock:
            stale = [w for w in self._workers
                     if w.state == "idle" and (now - w.last_used >= limit or not w.alive)]
            for worker in stale:
                self._workers.remove(worker)
                worker.state = "closed"
        for worker in stale:
            worker.close()
        return len(stale)

    def close(self) -> None:
        """Close every worker; a busy one's run ends as its handle sees the worker go."""
        self._closed.set()
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            worker.close(timeout_s=CLOSE_TIMEOUT_S if worker.state == "idle" else 1.0)

    def _start_reaper(self) -> None:
        if self._reaper is None:
            self._reaper = threading.Thread(target=self._reap, name="spark-pool-reaper", daemon=True)
            self._reaper.start()

    def _reap(self) -> None:
        interval = max(0.5, min(30.0, self.idle_timeout_s / 4))
        while not self._closed.wait(interval):
            self.close_idle()


_default: SparkWorkerPool | None = None
_default_lock = threading.Lock()


def default_pool() -> SparkWorkerPool:
    """The process-wide pool (the server's, or a one-shot CLI's), created on first use and
    closed at interpreter exit."""
    global _default
    with _default_lock:
        if _default is None or _default._closed.is_set():
            _default = SparkWorkerPool()
            atexit.register(_default.close)
        return _default
