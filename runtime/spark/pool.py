"""Warm Spark workers: long-lived processes (runtime.spark.worker), one SparkSession (one JVM)
each, keyed by the resource shape (master, every spark.* setting, driver memory included, the
run's environment and the variables of this process that reach the JVM).

They speak the pool protocol of warm workers (runtime.pools) and follow its policy, as warm python
parents do: each listens on an abstract Unix socket named after the runtime home, its shape and a
slot, so any process of the home takes an idle one (a CLI run takes a server's, or one an earlier
`--warm` run left), one run at a time. A run takes an idle worker of its shape or starts one; a
different shape (another driver memory) is a different worker, never a reused one. A worker whose
run crashes takes only that run with it. A worker retires after MLRUNTIME_WARM_MAX_RUNS runs,
after MLRUNTIME_WARM_IDLE_S idle seconds, and with its owner when it has one (a server, a plain CLI
run); one a `--warm` CLI run started outlives that run. A pool with no home (`SparkWorkerPool()`,
or a process whose runs are cold) is private: nobody else finds its workers, and they end with it.
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

from .. import pools
from ..errors import ExecutionError
from .config import SparkConfig

__all__ = ["LogSink", "PoolWorker", "SparkWorkerPool", "default_pool", "worker_key"]

START_TIMEOUT_S = 180.0     # a new JVM on a loaded host
BIND_TIMEOUT_S = 60.0       # the worker process up and listening (before its JVM)
TAKE_TIMEOUT_S = 10.0
CLOSE_TIMEOUT_S = 10.0
# Variables of this process that a worker inherits and that change what its driver or JVM does:
# part of the shape, so a worker started from another environment is never taken for this one.
KEY_ENV_PREFIXES = ("MLRUNTIME_", "SPARK_", "PYSPARK_", "HADOOP_", "JAVA_")
KEY_ENV = ("PYTHONPATH", "LD_LIBRARY_PATH", "LD_PRELOAD")
NOT_KEY_ENV = ("MLRUNTIME_WARM", "MLRUNTIME_HOME")


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


def worker_key(config: SparkConfig, env: Mapping[str, str]) -> str:
    """The shape a worker serves, hashed (its socket names it)."""
    inherited = {k: v for k, v in os.environ.items()
                 if (k.startswith(KEY_ENV_PREFIXES) or k in KEY_ENV) and not k.startswith(NOT_KEY_ENV)}
    return pools.key_hash([config.key(env), env.get("PYSPARK_DRIVER_PYTHON") or sys.executable,
                           inherited])


class PoolWorker:
    """One Spark worker process as this process sees it: its socket name and pid, and while this
    process holds it (took it for a run), the connection its run goes over and its output comes
    back on."""

    def __init__(self, name: str, key: str, config: SparkConfig,
                 proc: subprocess.Popen | None = None) -> None:
        self.name, self.key, self.config = name, key, config
        self.proc = proc                 # when this process started it
        self.pid: int = proc.pid if proc is not None else 0
        self.start_ticks: int | None = None
        self.state = "starting"          # starting -> busy <-> idle -> closed (as this pool saw it)
        self.last_used = time.monotonic()
        self.runs_served = 0
        self.effective: dict[str, Any] | None = None
        self.startup_s: float | None = None
        self.start_error: str | None = None
        self._conn: socket.socket | None = None
        self._sink: LogSink | None = None
        self._sink_lock = threading.Lock()
        self._ready = threading.Event()
        self._done = threading.Event()
        self._reply: dict[str, Any] | None = None

    # --- holding it ------------------------------------------------------------------------------

    def attach(self, conn: socket.socket, taken: dict[str, Any], rest: bytes,
               sink: LogSink | None) -> None:
        """This process took the worker (`taken`: its reply): its frames are read from now on."""
        from ..procs import proc_start_ticks

        about = taken.get("taken") or {}
        self.pid = int(about.get("pid") or self.pid)
        self.start_ticks = proc_start_ticks(self.pid)
        self.runs_served = int(about.get("runs") or 0)
        self._conn, self._reply = conn, None
        self._ready.clear()
        self._done.clear()
        self.set_sink(sink)
        if taken.get("ready"):
            self.effective, self.startup_s = about.get("spark"), about.get("startupS")
            self._ready.set()
        self.state = "busy"
        threading.Thread(target=self._read, args=(conn, rest), name=f"spark-worker-{self.pid}",
                         daemon=True).start()

    def _read(self, conn: socket.socket, rest: bytes) -> None:
        """The frames of one take, until its connection closes. A released connection's reader
        ends quietly: the view may hold a new take by then."""
        buffer = rest
        while True:
            while b"\n" in buffer and self._conn is conn:
                line, _, buffer = buffer.partition(b"\n")
                self._frame(line + b"\n")
            try:
                chunk = conn.recv(1 << 16)
            except OSError:   # a killed worker resets the connection when it had unread data
                chunk = b""
            if not chunk:
                break
            buffer += chunk
        conn.close()
        if self._conn is not conn:   # released (or discarded) by this process
            return
        if buffer:
            self._frame(buffer)
        # The connection closed: the worker has ended.
        if not self._ready.is_set() and self.start_error is None:
            self.start_error = f"the Spark worker exited while starting ({self._exit_text()})"
        self._ready.set()
        self._done.set()

    def _frame(self, line: bytes) -> None:
        kind, body = line[:1], line[1:]
        if kind == b"L":
            with self._sink_lock:
                if self._sink is not None:
                    try:
                        self._sink.write(body)
                    except (OSError, ValueError):
                        pass
            return
        try:
            message = json.loads(body)
        except ValueError:
            return
        event = message.get("event")
        if event == "ready":
            self.effective, self.startup_s = message.get("spark"), message.get("startup_s")
            self._ready.set()
        elif event == "failed":
            self.start_error = message.get("error")
            self._ready.set()
        elif event == "done":
            self.runs_served += 1
            self._reply = message
            self._done.set()

    def _send(self, message: dict[str, Any]) -> bool:
        conn = self._conn
        if conn is None:
            return False
        try:
            conn.sendall((json.dumps(message) + "\n").encode())
            return True
        except OSError:
            return False

    def _exit_text(self) -> str:
        if self.proc is None:
            return "it was started by another process" if self.alive else "it has ended"
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
        if self.proc is not None:
            return self.proc.poll() is None
        from ..procs import proc_start_ticks

        ticks = proc_start_ticks(self.pid) if self.pid > 0 else None
        return ticks is not None and (self.start_ticks is None or ticks == self.start_ticks)

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
        """Send one run and wait for its answer; None when the worker died first. Its output
        (to the end of the run) has reached the sink when the answer comes."""
        self._done.clear()
        self._reply = None
        if not self._send({"cwd": os.getcwd(), **message}):
            return None
        self._done.wait()
        return self._reply

    def interrupt(self) -> None:
        """Cancel the run: pyspark cancels every Spark job; the engine's code gets KeyboardInterrupt."""
        if not self._send({"op": "cancel"}) and self.pid > 0:
            try:
                os.kill(self.pid, signal.SIGINT)
            except ProcessLookupError:
                pass

    def kill(self) -> None:
        """The worker and its JVM, at once (they share a process group)."""
        if self.pid > 0 and self.alive:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def release(self) -> None:
        """Hand the worker back (idle, for any process of the home)."""
        self.set_sink(None)
        self._send({"op": "release"})
        self.detach()
        self.state = "idle"
        self.last_used = time.monotonic()

    def detach(self) -> None:
        """Let go of the connection (its reader closes it once woken)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self, timeout_s: float = CLOSE_TIMEOUT_S) -> None:
        """Ask the worker to stop, wait for it, then kill what is left of its group."""
        from ..procs import proc_start_ticks

        self.state = "closed"
        conn = pools.connect(self.name)
        if conn is not None:
            pools.ask(conn, {"op": "shutdown"}, 5.0)
            conn.close()
        self.detach()
        deadline = time.monotonic() + timeout_s
        while self.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        self.kill()
        if self.proc is not None:
            self.proc.wait()
        elif self.pid > 0:
            while proc_start_ticks(self.pid) is not None and time.monotonic() < deadline + 5:
                time.sleep(0.05)

    def describe(self) -> dict[str, Any]:
        return {"pid": self.pid, "state": self.state, "master": self.config.master,
                "runsServed": self.runs_served, "spark": self.effective, "name": self.name}


class SparkWorkerPool:
    """The warm Spark workers this process uses, by resource shape. Thread-safe; one run per
    worker at a time. `policy` (runtime.pools.WarmPolicy) puts them in a runtime home, where other
    processes find them; without one the pool is private. `idle_timeout_s` overrides the policy's
    idle seconds (MLRUNTIME_WARM_IDLE_S)."""

    def __init__(self, *, idle_timeout_s: float | None = None, log_dir: Path | None = None,
                 policy: pools.WarmPolicy | None = None, max_runs: int | None = None) -> None:
        self.policy = policy
        defaults = policy or pools.WarmPolicy(None, start=True, owned=True)
        self.idle_timeout_s = defaults.idle_s if idle_timeout_s is None else idle_timeout_s
        self.max_runs = max_runs or defaults.max_runs
        # Workers it starts end with this process, unless it may start ones that outlive it (--warm)
        self.owned = policy is None or policy.owned or not policy.start
        if policy is not None and policy.home_root is not None:
            self.prefix = pools.home_prefix(policy.home_root)
            self.log_dir = log_dir or Path(policy.home_root) / "warm"
        else:
            self.prefix = pools.private_prefix()
            self.log_dir = log_dir or Path(tempfile.gettempdir()) / f"mlruntime-spark-{os.getuid()}"
        self._workers: list[PoolWorker] = []   # every worker this pool started or took
        self._lock = threading.Lock()
        self._closed = threading.Event()

    @property
    def home_root(self) -> Path | None:
        return self.policy.home_root if self.policy is not None else None

    def acquire(self, config: SparkConfig, env: Mapping[str, str], sink: LogSink | None = None
                ) -> tuple[PoolWorker, bool]:
        """(a worker of this shape, held for one run, whether it was already warm). A new worker
        may still be starting: call `wait_ready` before sending it a run."""
        key = worker_key(config, env)
        problem = "no free slot"
        for _attempt in range(5):
            if self._closed.is_set():
                raise ExecutionError("The Spark worker pool is closed")
            worker = self._take_idle(key, config, sink)
            if worker is not None:
                return worker, worker.effective is not None
            worker, problem = self._start(key, config, env, sink)
            if worker is not None:
                return worker, False
        raise ExecutionError(f"Cannot start a Spark worker for {config.master}: {problem}")

    def _prefix(self, key: str) -> str:
        return pools.socket_name(self.home_root, "spark", key, prefix=self.prefix) + "-"

    def _view(self, name: str, key: str, config: SparkConfig,
              proc: subprocess.Popen | None = None) -> PoolWorker:
        with self._lock:
            for worker in self._workers:
                if worker.name == name and proc is None and worker.alive:
                    return worker   # this pool's view of it, from an earlier run
            worker = PoolWorker(name, key, config, proc)
            self._workers = [w for w in self._workers if w.name != name]   # an ended one's
            self._workers.append(worker)
            return worker

    def _held(self) -> set[str]:
        with self._lock:
            return {w.name for w in self._workers if w.state in ("starting", "busy")}

    def _take_idle(self, key: str, config: SparkConfig, sink: LogSink | None) -> PoolWorker | None:
        held = self._held()
        for name in pools.discover(self._prefix(key)):
            if name in held:
                continue
            taken = _take(name)
            if taken is not None:
                conn, reply, rest = taken
                worker = self._view(name, key, config)
                worker.attach(conn, reply, rest, sink)
                return worker
        return None

    def _start(self, key: str, config: SparkConfig, env: Mapping[str, str],
               sink: LogSink | None) -> tuple[PoolWorker | None, str]:
        listening = set(pools.discover(self._prefix(key))) | self._held()
        slot = next(n for n in range(len(listening) + 1)
                    if f"{self._prefix(key)}{n}" not in listening)
        name = f"{self._prefix(key)}{slot}"
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_WARM")}
        full_env.update(env)
        full_env["PYTHONUNBUFFERED"] = "1"
        full_env.setdefault("PYSPARK_PYTHON", sys.executable)  # UDF workers: this interpreter
        command = [full_env.get("PYSPARK_DRIVER_PYTHON") or sys.executable, "-m",
                   "runtime.spark.worker", "--name", name, "--config", config.model_dump_json(),
                   "--max-runs", str(self.max_runs), "--idle-s", str(self.idle_timeout_s)]
        if self.home_root is not None:
            command += ["--home", str(self.home_root)]
        if self.owned:
            command += ["--owner", pools.owner_arg()]
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / (f"spark-{key}-{slot}.log" if self.home_root is not None
                                   else f"spark-worker-{os.getpid()}-{key}-{slot}.log")
        with open(log_path, "ab") as log:
            try:
                proc = subprocess.Popen(command, env=full_env, stdin=subprocess.DEVNULL, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            except OSError as exc:
                raise ExecutionError(f"Cannot start a Spark worker: {exc}") from exc
        worker = self._view(name, key, config, proc)   # held: no other run of ours takes it
        deadline = time.monotonic() + BIND_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                with self._lock:
                    self._workers.remove(worker)
                if proc.returncode == 3:   # another process started this slot first
                    return None, f"slot {slot} was taken"
                raise ExecutionError(f"The Spark worker exited at its start with code "
                                     f"{proc.returncode} (see {log_path})")
            taken = _take(name)
            if taken is not None:
                conn, reply, rest = taken
                worker.attach(conn, reply, rest, sink)
                return worker, ""
            time.sleep(0.02)
        worker.kill()
        raise ExecutionError(f"The Spark worker (pid {proc.pid}) did not listen within "
                             f"{BIND_TIMEOUT_S:g} s (see {log_path})")

    def release(self, worker: PoolWorker, *, healthy: bool = True) -> None:
        """The run is over: hand the worker back warm, or stop it when it is unhealthy or dead."""
        if healthy and worker.alive and not self._closed.is_set():
            worker.release()
            return
        self.discard(worker)

    def discard(self, worker: PoolWorker) -> None:
        with self._lock:
            if worker in self._workers:
                self._workers.remove(worker)
        worker.set_sink(None)
        worker.state = "closed"
        worker.kill()
        worker.detach()
        if worker.proc is not None:
            worker.proc.wait()

    def workers(self) -> list[dict[str, Any]]:
        """The workers this pool started or took that still run."""
        with self._lock:
            return [w.describe() for w in self._workers if w.alive]

    def close(self) -> None:
        """Stop the workers this pool started that end with it; let go of the others (a busy
        one's run ends as its handle sees the worker go)."""
        self._closed.set()
        with self._lock:
            workers, self._workers = self._workers, []
        for worker in workers:
            if worker.proc is not None and self.owned:
                worker.stop(timeout_s=CLOSE_TIMEOUT_S if worker.state == "idle" else 1.0)
            else:
                worker.detach()


def _take(name: str) -> tuple[socket.socket, dict[str, Any], bytes] | None:
    """Take the worker listening on `name`: (the connection, its reply, what followed the
    reply), or None when it is busy, retiring or gone."""
    conn = pools.connect(name)
    if conn is None:
        return None
    conn.settimeout(TAKE_TIMEOUT_S)
    try:
        conn.sendall(b'{"op": "take"}\n')
        data = b""
        while b"\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError:
        data = b""
    line, _, rest = data.partition(b"\n")
    try:
        reply = json.loads(line) if line else {}
    except ValueError:
        reply = {}
    if "taken" not in reply:
        conn.close()
        return None
    conn.settimeout(None)
    return conn, reply, rest


_defaults: dict[Any, SparkWorkerPool] = {}
_default_lock = threading.Lock()


def default_pool() -> SparkWorkerPool:
    """The pool of this process's policy (runtime.pools.policy_for: the server's, a sweep's or a
    CLI run's, in its home; private when its runs are cold or it chose none), created on first
    use and closed at interpreter exit."""
    _chosen, policy = pools.process_policy()
    with _default_lock:
        pool = _defaults.get(policy)
        if pool is None or pool._closed.is_set():
            pool = _defaults[policy] = SparkWorkerPool(policy=policy)
            atexit.register(pool.close)
        return pool
