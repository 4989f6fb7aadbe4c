"""The python backend (`python-cpu`, `python-cuda`): one worker subprocess per run, in its own
process group, so a crash, an out-of-memory kill or a cancel never takes the caller down with it.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, TextIO

from ..errors import ExecutionError
from ..schemas import RunStatus
from ..procs import group_alive, kill_group, wait_child, wait_group_gone
from . import RESULT_FILE, Backend, Outcome, RunHandle, WorkerSpec, judge, stage_run

__all__ = ["PythonBackend", "PythonRunHandle"]

if TYPE_CHECKING:
    from ..plans import Plan
    from ..warm import WarmChild, WarmPools

LOG_TAIL_LINES = 40
_SIGNAL_NOTES = {signal.SIGKILL: " (killed — out of memory?)", signal.SIGSEGV: " (segmentation fault)",
                 signal.SIGBUS: " (bus error)", signal.SIGABRT: " (aborted)"}


class PythonBackend(Backend):
    """Runs `python -m runtime.worker SPEC.json` with the plan's environment.

    `grace_s` is how long `cancel` waits after SIGTERM before it sends SIGKILL.
    """

    name = "python"
    takes_warm_pools = True

    def __init__(self, *, grace_s: float = 3.0, warm: WarmPools | None = None) -> None:
        self.grace_s = grace_s
        self.warm = warm   # runtime.warm: fork runs from a warm parent; None: every run cold
        self._preloads: dict[str, tuple[str, ...]] = {}

    def submit(self, *, spec: WorkerSpec, plan: Plan, log_path: Path,
               echo: TextIO | None = None) -> PythonRunHandle:
        # The plan decided device and threads; the spec only carries them to the worker.
        spec = spec.model_copy(update={"device": plan.device, "threads": plan.threads})
        spec_path, log_path = stage_run(spec, log_path)

        env = {**os.environ, **plan.env, "PYTHONUNBUFFERED": "1"}
        if self.warm is not None and spec.engine.startswith("recipe:r:"):
            from ..recipes.r.warm import policy_env   # an R run's worker: its warm R parent

            env.update(policy_env(self.warm))
        python = str(getattr(plan, "python", None) or sys.executable)
        log = open(log_path, "ab", buffering=0)
        offset = log.tell()
        proc: subprocess.Popen | WarmChild | None = None
        if self.warm is not None:   # forked from the warm parent of this interpreter and device
            proc, cold_reason = self.warm.spawn(
                python=python, device_kind="cuda" if plan.device.startswith("cuda") else "cpu",
                spec_path=spec_path, log_path=log_path, env=env, needs=self._preload(spec.engine),
                result_path=Path(spec.run_dir) / RESULT_FILE)
            if proc is None and cold_reason:
                log.write(f"[runtime] cold start: {cold_reason}\n".encode())
        if proc is None:
            proc = self._start_cold(python, spec, spec_path, plan, env, log)
        return PythonRunHandle(proc, spec=spec, log=log, log_path=log_path, echo=echo,
                               grace_s=self.grace_s, spec_path=spec_path, offset=offset)

    def _start_cold(self, python: str, spec: WorkerSpec, spec_path: Path, plan: Plan,
                    env: dict[str, str], log: IO[bytes]) -> subprocess.Popen:
        command = [python, "-m", "runtime.worker", str(spec_path)]
        # The worker writes its log file itself, never a pipe to this process: it outlives a
        # caller that dies (a server restart adopts it) and `echo` follows the file instead.
        try:
            return subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            log.close()
            raise ExecutionError(f"Run {spec.run_id}: cannot start the {plan.backend} worker: {exc}") from exc

    def _preload(self, engine_ref: str) -> tuple[str, ...]:
        """What the engine declares for a warm parent to import (Engine.preload); () when the
        engine cannot be loaded here (the worker then says why)."""
        if engine_ref not in self._preloads:
            from ..engine import load_engine

            try:
                cls = load_engine(engine_ref)
            except Exception:
                self._preloads[engine_ref] = ()
            else:   # its own module too, unless it is a recipe (whose code is never preloaded)
                own = () if engine_ref.startswith("recipe:") else (cls.__module__,)
                self._preloads[engine_ref] = (*getattr(cls, "preload", ()), *own)
        return self._preloads[engine_ref]


class PythonRunHandle(RunHandle):
    def __init__(self, proc: subprocess.Popen | WarmChild, *, spec: WorkerSpec, log: IO[bytes], log_path: Path,
                 echo: TextIO | None, grace_s: float, spec_path: Path | None = None,
                 offset: int = 0) -> None:
        from ..procs import proc_start_ticks

        self.run_id = spec.run_id
        self.pid = proc.pid
        self.pgid = proc.pid            # a new session: the worker leads its own group
        self.start_ticks = getattr(proc, "start_ticks", None) or proc_start_ticks(proc.pid)
        self.warm_parent = getattr(proc, "parent_pid", None)   # None: a cold start
        self.spec_path = spec_path
        self.backend_name = "python"
        self._proc = proc
        self._spec = spec
        self._log = log
        self._log_path = log_path
        self._grace_s = grace_s
        self._lock = threading.Lock()
        self._cancelled: str | None = None   # the cancel's reason, once asked
        self._outcome: Outcome | None = None
        self._pump: threading.Thread | None = None
        self._ended = threading.Event()
        if echo is not None:
            self._pump = threading.Thread(target=follow_log,
                                          args=(log_path, offset, echo, self._ended),
                                          name=f"log-{spec.run_id}", daemon=True)
            self._pump.start()

    # --- the interface -----------------------------------------------------------------------

    def status(self) -> RunStatus:
        if self._outcome is not None:
            return self._outcome.state
        if self._proc.poll() is None:
            return RunStatus.RUNNING
        return self._finish().state

    def wait(self, timeout: float | None = None) -> Outcome:
        try:
            wait_child(self._proc, timeout)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"run {self.run_id} still running after {timeout} s") from None
        return self._finish()

    def cancel(self) -> None:
        with self._lock:
            if self._cancelled is not None or self._proc.poll() is not None:
                return
            self._cancelled = "cancelled"
        # The whole group gets SIGTERM and a grace period: children of the engine included.
        kill_group(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + self._grace_s
        try:
            self._proc.wait(self._grace_s)
        except subprocess.TimeoutExpired:
            pass
        while group_alive(self.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if group_alive(self.pid):
            kill_group(self.pid, signal.SIGKILL)
            self._cancelled = f"cancelled; killed (SIGKILL) after a {self._grace_s:g} s grace period"
        else:
            self._cancelled = "cancelled (SIGTERM)"
        self._proc.wait()
        self._finish()

    # --- the end of a run ----------------------------------------------------------------------

    def _finish(self) -> Outcome:
        with self._lock:
            if self._outcome is not None:
                return self._outcome
            returncode = self._proc.wait()
            # A run owns its process group: whatever the engine left behind goes with it, and
            # the run ends (freeing its GPU lease) only once the whole group is gone.
            kill_group(self.pid, signal.SIGKILL)
            wait_group_gone(self.pid, GROUP_GONE_TIMEOUT_S)
            self._ended.set()
            if self._pump is not None:
                self._pump.join(timeout=5.0)
            self._log.close()
            self._outcome = self._judge(returncode)
            return self._outcome

    def _judge(self, returncode: int) -> Outcome:
        if returncode < 0:
            failure = (f"worker killed by signal {_signal_name(-returncode)}"
                       f"{_SIGNAL_NOTES.get(-returncode, '')}")
        else:
            failure = None
        gone = (f"worker exited with code 0 but left no successful {RESULT_FILE}" if returncode == 0
                else f"worker exited with code {returncode}")
        return judge(self._spec.run_dir, self._log_path, cancelled=self._cancelled,
                     exited_ok=returncode == 0, failure=failure, gone=gone,
                     returncode=returncode, tail_lines=LOG_TAIL_LINES)


def follow_log(path: Path, offset: int, echo: TextIO, ended: threading.Event,
               poll_s: float = 0.05) -> None:
    """Copy what is appended to `path` after `offset` to `echo`, decoded, until `ended` is set
    and everything written before it has been copied."""
    try:
        fh = open(path, "rb")
    except OSError:
        return
    with fh:
        fh.seek(offset)
        pending = b""
        while True:
            last_round = ended.is_set()
            chunk = fh.read(65536)
            if chunk:
                pending += chunk
                lines, _, pending = pending.rpartition(b"\n")
                if lines:
                    _echo(echo, lines + b"\n")
                continue
            if last_round:
                if pending:
                    _echo(echo, pending)
                return
            ended.wait(poll_s)


def _echo(echo: TextIO, data: bytes) -> None:
    try:
        echo.write(data.decode(errors="replace"))
        echo.flush()
    except (OSError, ValueError):  # a closed console must not stop the run
        pass


GROUP_GONE_TIMEOUT_S = 10.0


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
