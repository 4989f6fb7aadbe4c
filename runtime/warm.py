"""Warm python workers, the client side: find or start the warm parent (runtime.forkserver) of a run's
interpreter and device kind, and have it fork the run's worker.

The pool protocol, its policy (idle seconds, max runs, an owner) and its environment variables
are runtime.pools', shared with warm Spark workers (runtime.spark.pool). One parent serves one key: (interpreter, device kind `cpu`/`cuda`, and the variables that decide
what an import finds: PYTHONPATH, LD_LIBRARY_PATH, LD_PRELOAD) within one runtime home. It listens
on an abstract Unix socket named after the home and the key, so every process of the home finds
it: `run serve` starts its parents lazily and stops them when it stops; a sweep does the same for
its trials; a CLI run uses the parent a server (or an earlier `--warm` run) left listening, and
with `--warm` starts one that stays up `MLRUNTIME_WARM_IDLE_S` seconds for the runs after it.

A run that cannot be forked warm (no parent and none to start, a parent that is broken or
retiring twice in a row, PYTHONHASHSEED set for the run, not Linux) starts cold, as before, and
says why in its log; no run fails for want of a warm parent.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from . import pools
from .pools import ENV_IDLE_S, ENV_MAX_RUNS, ENV_WARM, WarmPolicy, describe_home, stop_home

__all__ = ["ENV_IDLE_S", "ENV_MAX_RUNS", "ENV_WARM", "WarmChild", "WarmPools", "describe_home",
           "listening", "pools_for", "socket_name", "stop_home"]

START_TIMEOUT_S = 120.0     # the imports of a new parent (torch on a loaded host)
REPLY_TIMEOUT_S = 60.0      # a parent importing what a run needs before it forks
KEY_ENV = ("PYTHONPATH", "LD_LIBRARY_PATH", "LD_PRELOAD")
EXITED_AT_START = "the warm parent exited at its start"


def socket_name(home_root: Path, key: str) -> str:
    return pools.socket_name(home_root, "python", key)


def pool_key(python: str, device_kind: str, env: Mapping[str, str]) -> str:
    return pools.key_hash([os.path.abspath(python), device_kind,
                           *[env.get(name, "") for name in KEY_ENV]])


def cold_reason(env: Mapping[str, str]) -> Optional[str]:
    """Why a run with this environment cannot be forked warm, or None."""
    if not sys.platform.startswith("linux"):
        return "warm workers need Linux (fork, abstract sockets, /proc)"
    if env.get("PYTHONHASHSEED") not in (None, "", "random"):
        return "PYTHONHASHSEED is set: a forked child keeps its parent's hash seed"
    return None


def pools_for(home_root: Path, *, kind: str, flag: Optional[str] = None) -> Optional["WarmPools"]:
    """The warm pools a process of `kind` uses ("server", "sweep" or "cli"), given the command's
    `--warm`/`--cold` (`flag` "warm", "cold" or None) and MLRUNTIME_WARM; None: every run cold.

    A server or a sweep starts its parents and stops them at its end. A CLI run uses a parent
    already listening in its home; with --warm (or MLRUNTIME_WARM=1) it starts one that outlives
    it for MLRUNTIME_WARM_IDLE_S seconds. The same policy becomes the process's Spark workers'
    (runtime.pools.policy_for, runtime.spark.pool.default_pool)."""
    policy = pools.policy_for(home_root, kind=kind, flag=flag)
    return None if policy is None else WarmPools.from_policy(policy)


class WarmPools:
    """The warm parents this process uses, one per key."""

    def __init__(self, home_root: Path, *, start: bool, owned: bool,
                 max_runs: Optional[int] = None, idle_s: Optional[float] = None) -> None:
        self.home_root = Path(home_root)
        self.state_dir = self.home_root / "warm"
        self.start = start          # may this process start a parent?
        self.owned = owned          # ... that ends with it (else: one that waits idle_s)
        policy = WarmPolicy(self.home_root, start=start, owned=owned)   # the environment's
        self.max_runs = max_runs or policy.max_runs
        self.idle_s = idle_s if idle_s is not None else policy.idle_s
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._started: dict[str, subprocess.Popen] = {}   # key -> the parent this process started
        self._closed = False

    @classmethod
    def from_policy(cls, policy: WarmPolicy) -> "WarmPools":
        return cls(policy.home_root, start=policy.start, owned=policy.owned,
                   max_runs=policy.max_runs, idle_s=policy.idle_s)

    # --- a run -----------------------------------------------------------------------------

    def spawn(self, *, python: str, device_kind: str, spec_path: Path, log_path: Path,
              env: Mapping[str, str], needs: Sequence[str] = (),
              result_path: Optional[Path] = None) -> tuple[Optional["WarmChild"], Optional[str]]:
        """(the forked run, None), or (None, why the run must start cold; None when cold is
        simply this process's default: no parent listens and it may not start one)."""
        reason = cold_reason(env)
        if reason is not None or self._closed:
            return None, reason or "the warm pools are closed"
        key = pool_key(python, device_kind, env)
        name = socket_name(self.home_root, key)
        request = {"op": "run", "spec": str(spec_path), "log": str(log_path), "env": dict(env),
                   "cwd": os.getcwd(), "umask": _umask(), "needs": list(needs)}
        problem = "no warm parent is running for this interpreter"
        for _attempt in range(2):   # a retiring or broken parent: once more, with a new one
            conn = _connect(name)
            if conn is None:
                if not self.start:   # a CLI run's default: cold unless a parent is listening
                    return None, None if _attempt == 0 else problem
                conn, problem = self._start(key, name, python, device_kind, env, needs)
                if conn is None and problem.startswith(EXITED_AT_START):
                    continue   # once more: a parent that an import made unsafe exits at its start
                if conn is None:
                    return None, problem
            reply, problem = _ask(conn, request, REPLY_TIMEOUT_S)
            if reply is not None and "pid" in reply:
                return WarmChild(conn, reply, result_path), None
            if reply is None and problem.startswith("no reply"):
                _kill_peer_of(conn)   # hung: it goes, and this run starts cold
                conn.close()
                return None, f"the warm parent did not answer ({problem})"
            conn.close()
            if reply is None:   # it ended as we asked (retired at its start, or crashed)
                problem = f"the warm parent went away ({problem})"
            else:
                problem = reply.get("retired") or reply.get("error") or "the warm parent refused"
        return None, problem

    def prestart(self, *, python: str, device_kind: str, env: Mapping[str, str],
                 needs: Sequence[str] = (), later: Sequence[str] = ()) -> Optional[str]:
        """Start the warm parent of this interpreter, device kind and environment ahead of its
        first run (a server's published Models: runtime.serving), importing `needs`, then
        `later` one module at a time between runs; it stays up as long as this process, idle or
        not. None once a parent listens (its imports may still run: a run asking meanwhile
        waits for them, and for its own needs only among `later`), else why none does. A run
        that starts meanwhile waits for this same start (one start per key and process)."""
        reason = cold_reason(env)
        if reason is not None or self._closed or not self.start:
            return reason or ("the warm pools are closed" if self._closed
                              else "this process does not start warm parents")
        key = pool_key(python, device_kind, env)
        name = socket_name(self.home_root, key)
        conn = _connect(name)
        if conn is None:
            conn, problem = self._start(key, name, python, device_kind, env, needs, idle_s=0.0,
                                        later=later)
            if conn is None:
                return problem
        conn.close()
        return None

    def _start(self, key: str, name: str, python: str, device_kind: str, env: Mapping[str, str],
               needs: Sequence[str], idle_s: Optional[float] = None, later: Sequence[str] = ()
               ) -> tuple[Optional[socket.socket], str]:
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:   # one start per key in this process; other processes lose the bind race
            conn = _connect(name)
            if conn is not None:
                return conn, ""
            self.state_dir.mkdir(parents=True, exist_ok=True)
            previous = self._started.pop(key, None)
            if previous is not None:
                previous.poll()   # reap a parent of ours that retired
            parent_env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_WARM")}
            for k in KEY_ENV:
                if env.get(k):
                    parent_env[k] = env[k]
                else:
                    parent_env.pop(k, None)
            command = [python, "-m", "runtime.forkserver", "--name", name,
                       "--preload", ",".join(needs), "--state", str(self.state_dir / f"{key}.json"),
                       "--max-runs", str(self.max_runs), "--device", device_kind,
                       "--home", str(self.home_root)]
            # One policy for every warm worker (runtime.pools.Lifetime): idle seconds always, and
            # the end of its owner for a server's or a sweep's.
            command += ["--idle-s", str(self.idle_s if idle_s is None else idle_s)]
            if later:
                command += ["--later", ",".join(later)]
            if self.owned:
                command += ["--owner", pools.owner_arg()]
            # A child rewrites its command line over these words to read as a cold worker's
            # (python -m runtime.worker HOME/runs/ID/spec.json): leave it room enough.
            needed = len(python) + len(str(self.home_root.resolve())) + 160
            have = sum(len(os.fsencode(word)) + 1 for word in command)
            if have < needed:
                command.append("--room=" + "." * (needed - have))
            log = open(self.state_dir / f"{key}.log", "ab")
            try:
                proc = subprocess.Popen(command, env=parent_env, stdin=subprocess.DEVNULL,
                                        stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
            except OSError as exc:
                return None, f"cannot start a warm parent with {python}: {exc}"
            finally:
                log.close()
            deadline = time.monotonic() + START_TIMEOUT_S
            while time.monotonic() < deadline:
                conn = _connect(name)
                if conn is not None:
                    if self.owned:
                        self._started[key] = proc
                    return conn, ""
                if proc.poll() is not None:
                    conn = _connect(name)   # it lost the race to another process's parent
                    if conn is not None:
                        return conn, ""
                    return None, (f"{EXITED_AT_START} with code {proc.returncode} "
                                  f"(see {self.state_dir / f'{key}.log'})")
                time.sleep(0.01)
            proc.kill()
            return None, f"the warm parent did not start within {START_TIMEOUT_S:g} s"

    # --- the pools ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the parents this process started (their running children go on)."""
        self._closed = True
        for key, proc in list(self._started.items()):
            conn = _connect(socket_name(self.home_root, key))
            if conn is not None and _peer(conn)[0] == proc.pid:   # ours, not a later one's
                _ask(conn, {"op": "shutdown"}, 5.0)
            else:
                proc.terminate()
            if conn is not None:
                conn.close()
            try:
                proc.wait(10.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5.0)
        self._started.clear()


def listening(home_root: Path) -> list[str]:
    """The socket names of the warm parents listening for this home."""
    return pools.discover(pools.home_prefix(home_root) + "python-")


class WarmChild:
    """A forked run seen as a `subprocess.Popen` (pid, poll, wait, returncode): its parent tells
    its exit status over the run's connection. If the parent dies first, the child is polled
    through /proc and its status read from its result (DONE: 0, else 1)."""

    def __init__(self, conn: socket.socket, reply: dict[str, Any],
                 result_path: Optional[Path]) -> None:
        self.pid: int = reply["pid"]
        self.start_ticks = reply.get("start")
        self.parent_pid = reply.get("parent")
        self.from_spare = bool(reply.get("spare"))   # forked ahead of the run, not on request
        self.returncode: Optional[int] = None
        self.status_lost = False
        self._conn = conn
        self._buf = str(reply.get("_rest", "")).encode()   # an exit that came with the pid
        self._result_path = result_path
        self._lock = threading.Lock()

    def poll(self) -> Optional[int]:
        if self.returncode is None and self._lock.acquire(blocking=False):
            try:
                self._read(0.0)
            finally:
                self._lock.release()
        return self.returncode

    def wait(self, timeout: Optional[float] = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self.returncode is None:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise subprocess.TimeoutExpired(f"warm run pid {self.pid}", timeout or 0)
                self._read(left)
        return self.returncode

    def _read(self, timeout: Optional[float]) -> None:
        if self._conn is None:
            self._poll_proc(timeout)
            return
        if b"\n" in self._buf:
            self._take_lines()
            return
        self._conn.settimeout(timeout)
        try:
            chunk = self._conn.recv(4096)
        except (socket.timeout, BlockingIOError):
            return
        except OSError:
            chunk = b""
        if not chunk:   # the parent died: follow the child itself
            self._conn.close()
            self._conn = None
            self.status_lost = True
            self._poll_proc(timeout)
            return
        self._buf += chunk
        self._take_lines()

    def _take_lines(self) -> None:
        while b"\n" in self._buf and self._conn is not None:
            line, _, self._buf = self._buf.partition(b"\n")
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if "exit" in message:
                self.returncode = int(message["exit"])
                self._conn.close()
                self._conn = None

    def _poll_proc(self, timeout: Optional[float]) -> None:
        from .procs import proc_start_ticks

        deadline = None if timeout is None else time.monotonic() + timeout
        while proc_start_ticks(self.pid) is not None and (
                self.start_ticks is None or proc_start_ticks(self.pid) == self.start_ticks):
            if deadline is not None and time.monotonic() >= deadline:
                return
            time.sleep(0.05)
        result = {}
        if self._result_path is not None:
            try:
                result = json.loads(Path(self._result_path).read_text())
            except (OSError, ValueError):
                result = {}
        self.returncode = 0 if result.get("state") == "DONE" else 1


# --- the socket --------------------------------------------------------------------------------

_connect, _peer, _ask, _kill_peer_of = pools.connect, pools.peer, pools.ask, pools.kill_peer_of


def _umask() -> Optional[int]:
    """This process's umask, read without setting it (os.umask would, for every thread)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return None
