"""The pyspark backend: a run goes to a warm Spark worker of its resource shape (see
`runtime.spark.pool`), whose SparkSession was built from the run's ResourceRequest.

The run's effective Spark configuration (master, application id, driver and executor memory and
cores, JVM pid, whether the session was reused) is read back from Spark and put in the worker's
result under `spark`, next to the stage timings.
"""
from __future__ import annotations

import dataclasses
import sys
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TextIO

from ..errors import MLRuntimeError
from ..resources import ResourceRequest
from ..schemas import RunStatus
from . import RESULT_FILE, Backend, Outcome, RunHandle, WorkerSpec, judge, stage_run

if TYPE_CHECKING:
    from ..plans import Plan
    from ..spark.config import SparkConfig
    from ..spark.pool import PoolWorker, SparkWorkerPool

__all__ = ["PySparkBackend", "PySparkRunHandle"]

LOG_TAIL_LINES = 40


class PySparkBackend(Backend):
    """Runs a task on a Spark worker from `pool` (the process-wide pool by default).

    `master` is the configured Spark master (a flag or a server setting); without it
    $MLRUNTIME_SPARK_MASTER, then a `spark.master` task parameter, then `local[N]` apply.
    `grace_s` is how long `cancel` waits for the interrupted run before killing its worker.
    """

    name = "pyspark"
    engine_kinds = ("pyspark",)
    local_gpus = False                            # Spark schedules no GPUs here
    cli_options = {"spark_master": "master"}      # --spark-master URL

    def __init__(self, *, pool: SparkWorkerPool | None = None, master: str | None = None,
                 grace_s: float = 5.0) -> None:
        self._pool = pool
        self.master = master
        self.grace_s = grace_s

    @property
    def pool(self) -> SparkWorkerPool:
        if self._pool is None:
            from ..spark.pool import default_pool

            self._pool = default_pool()
        return self._pool

    def spark_config(self, resources: ResourceRequest, plan: Plan) -> SparkConfig:
        """The planned Spark configuration (what `--dry-run` shows)."""
        from ..spark.config import spark_config

        return spark_config(resources, default_cores=plan.threads, master=self.master)

    def plan_more(self, resources: ResourceRequest, plan: Plan) -> SparkConfig:
        return self.spark_config(resources, plan)   # --explain shows it, the record keeps it

    def submit(self, *, spec: WorkerSpec, plan: Plan, log_path: Path, echo: TextIO | None = None,
               resources: ResourceRequest | None = None,
               mlinstance_id: str | None = None) -> PySparkRunHandle:
        """`resources` and `mlinstance_id` default to the spec's or the plan's, when they carry them."""
        from ..spark.pool import LogSink
        from ..spark.session import require_pyspark

        require_pyspark()  # MissingDependency now, before a worker process starts
        if resources is None:
            resources = (getattr(spec, "resources", None) or getattr(plan, "resources", None)
                         or ResourceRequest())
        mlinstance_id = mlinstance_id or getattr(spec, "mlinstance_id", None)
        config = self.spark_config(resources, plan)

        spec_path, log_path = stage_run(spec, log_path)
        log = open(log_path, "ab", buffering=0)
        sink = LogSink(log, echo)
        env = dict(plan.env)
        if getattr(plan, "python", None):   # a recipe's own environment: driver and executors
            env["PYSPARK_DRIVER_PYTHON"] = env["PYSPARK_PYTHON"] = str(plan.python)
            try:
                config, env = self._executor_environment(config, env, Path(plan.python), sink)
            except BaseException:
                log.close()
                raise
        handle = PySparkRunHandle(pool=self.pool, config=config, env=env, spec=spec,
                                  spec_path=spec_path, log=log, log_path=log_path,
                                  sink=sink, mlinstance_id=mlinstance_id,
                                  grace_s=self.grace_s)
        handle.start()
        return handle

    def _executor_environment(self, config: SparkConfig, env: dict[str, str], python: Path,
                              sink: Any) -> tuple[SparkConfig, dict[str, str]]:
        """On a cluster (executors in working folders of their own), the recipe's environment is
        no path there: the executors get what the cluster's Python lacks as a packed environment
        (runtime.spark.archives), or the cluster's Python when it lacks nothing."""
        from ..spark.archives import EXECUTOR_PYTHON, executor_environment, ships_to_executors

        if not ships_to_executors(config.master):
            return config, env
        say = lambda text: sink.write(f"{text}\n".encode())   # noqa: E731
        packed = executor_environment(python, home=getattr(self.pool, "home_root", None), say=say)
        say(packed.describe())
        conf = dict(config.conf)
        if packed.archive is None:
            env["PYSPARK_PYTHON"] = sys.executable   # the cluster's Python, as for any run
            # with our sdk (compat) on its path, as the recipe environment's .pth gives the driver
            from ..recipes import compat_path

            paths = [p for p in conf.get("spark.executorEnv.PYTHONPATH", "").split(":") if p]
            conf["spark.executorEnv.PYTHONPATH"] = ":".join([*paths, str(compat_path())])
            return config.model_copy(update={"conf": conf}), env
        archives = [a for a in conf.get("spark.archives", "").split(",") if a.strip()]
        conf["spark.archives"] = ",".join([*archives, packed.conf()["spark.archives"]])
        env["PYSPARK_PYTHON"] = EXECUTOR_PYTHON
        return config.model_copy(update={"conf": conf}), env


class PySparkRunHandle(RunHandle):
    def __init__(self, *, pool: SparkWorkerPool, config: SparkConfig, env: dict[str, str],
                 spec: WorkerSpec, spec_path: Path, log: IO[bytes], log_path: Path, sink: Any,
                 mlinstance_id: str | None, grace_s: float) -> None:
        self.run_id = spec.run_id
        self.config = config
        self.submitted_at = time.time()
        self._pool, self._env, self._spec, self._spec_path = pool, env, spec, spec_path
        self._log, self._log_path, self._sink = log, log_path, sink
        self._mlinstance_id = mlinstance_id
        self._grace_s = grace_s
        self._lock = threading.Lock()
        self._worker: PoolWorker | None = None
        self._cancelled: str | None = None
        self._outcome: Outcome | None = None
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._drive, name=f"spark-run-{spec.run_id}",
                                        daemon=True)

    def start(self) -> None:
        self._thread.start()

    # --- the interface -----------------------------------------------------------------------

    def status(self) -> RunStatus:
        return self._outcome.state if self._outcome is not None else RunStatus.RUNNING

    def wait(self, timeout: float | None = None) -> Outcome:
        if not self._finished.wait(timeout):
            raise TimeoutError(f"run {self.run_id} still running after {timeout} s")
        assert self._outcome is not None
        return self._outcome

    def cancel(self) -> None:
        with self._lock:
            if self._cancelled is not None or self._finished.is_set():
                return
            worker = self._worker
            # The reason is set before the run can end, so the outcome always carries it.
            self._cancelled = ("cancelled before Spark started" if worker is None else
                               "cancelled (Spark jobs cancelled, the run interrupted)"
                               if worker.effective is not None else
                               f"cancelled while Spark was starting; worker (pid {worker.pid}) killed")
        if worker is None:  # not started yet: _drive sees the flag
            self._finished.wait()
            return
        if worker.effective is not None:
            worker.interrupt()  # sc.cancelAllJobs() and KeyboardInterrupt in the engine
            if self._finished.wait(self._grace_s):
                return
            self._cancelled = (f"cancelled; Spark worker (pid {worker.pid}) killed after a "
                               f"{self._grace_s:g} s grace period")
        worker.kill()
        self._finished.wait()

    # --- the run ---------------------------------------------------------------------------------

    def _drive(self) -> None:
        reply: dict[str, Any] | None = None
        failure: str | None = None
        worker: PoolWorker | None = None
        try:
            with self._lock:
                if self._cancelled is None:
                    worker, _ = self._pool.acquire(self.config, self._env, self._sink)
                    self._worker = worker
            if worker is not None:
                worker.wait_ready()
                if self._cancelled is None:
                    reply = worker.run({"op": "run", "run_id": self.run_id, "spec": str(self._spec_path),
                                        "mlinstance_id": self._mlinstance_id,
                                        "submitted_at": self.submitted_at})
                    if reply is None:
                        failure = f"Spark worker (pid {worker.pid}) died: {worker._exit_text()}"
        except MLRuntimeError as exc:
            failure = exc.detail
        except Exception as exc:  # a bug here must still end the run
            failure = f"{type(exc).__name__}: {exc}"
        finally:
            if worker is not None:
                # A cancelled run's worker is retired: a KeyboardInterrupt may have cut a py4j
                # call short, and the gateway's state after that is not worth trusting.
                healthy = (reply is not None and bool(reply.get("healthy", True)) and worker.alive
                           and self._cancelled is None)
                self._pool.release(worker, healthy=healthy)
            try:
                self._log.close()
            except OSError:
                pass
            self._outcome = self._judge(reply, failure)
            self._finished.set()

    def _judge(self, reply: dict[str, Any] | None, failure: str | None) -> Outcome:
        gone = (str(reply["error"]) if reply is not None and reply.get("error") else
                f"the Spark worker left no successful {RESULT_FILE}")
        outcome = judge(self._spec.run_dir, self._log_path, cancelled=self._cancelled,
                        exited_ok=failure is None, failure=failure, gone=gone,
                        tail_lines=LOG_TAIL_LINES)
        # The worker's process serves other runs: a run's code is 0 when it ended DONE, else 1.
        code = (None if self._cancelled is not None or failure is not None else
                0 if outcome.state is RunStatus.DONE else 1)
        return dataclasses.replace(outcome, returncode=code)
