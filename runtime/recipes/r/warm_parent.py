"""The warm R parent's socket side, run by R itself through reticulate (runtime/recipes/r/parent.R
imports this file by path): it listens on an abstract Unix socket of the pool protocol
(runtime.pools: ping, shutdown, one run per connection), forks a child per run and tells the
run's worker the child's pid and then its exit status.

A child is a fresh process: its own session and process group, the run's working directory,
environment, umask and output (the worker's pipe, handed over the socket), R's temporary folder
its own, the generators reseeded. The worker's connection is the child's lifeline: when it closes
before the child ends (the worker was cancelled, hit maxRuntime or died), the child's process
group is killed. The parent retires by the shared policy (runtime.pools.Lifetime).

Standard library and runtime.pools only: the parent must stay light."""
from __future__ import annotations

import ctypes
import json
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
from typing import Any, Optional

from runtime import pools

POLL_S = 0.2


class Server:
    def __init__(self, config_json: str) -> None:
        config = json.loads(config_json)
        self.name = config["name"]
        self.lifetime = pools.Lifetime(max_runs=int(config.get("max_runs") or
                                                    pools.DEFAULT_MAX_RUNS),
                                       idle_s=float(config.get("idle_s") or 0),
                                       owner=pools.parse_owner(config.get("owner")))
        self.started = time.time()
        self.summary = str(config.get("summary") or "")
        self.preloaded: list[str] = []      # parent.R says what it loaded
        self.listener: Optional[socket.socket] = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind("\0" + self.name)      # a second parent of this key loses here
        self.listener.listen(64)
        self.pending: dict[socket.socket, tuple[bytes, list[int]]] = {}   # not yet a request
        self.running: dict[int, socket.socket] = {}       # child pid -> its worker's connection
        self.cut: set[socket.socket] = set()              # ... whose worker went away
        self.retiring: Optional[str] = None
        self._run: Optional[tuple[socket.socket, dict[str, Any], list[int]]] = None
        self.child_tmp: Optional[str] = None
        self._keep: list[Any] = []

    # --- the parent ------------------------------------------------------------------------------

    def next_run(self) -> Optional[dict[str, Any]]:
        """Serve pings, shutdowns and ending children until a run is asked for: the request
        (R forks next, then calls `forked`), or None when the parent retires."""
        while True:
            self._reap()
            if self.retiring is None:
                why = self.lifetime.why_retire(busy=bool(self.running))
                if why:
                    self._retire(why)
            if self.retiring is not None and not self.running:
                return None
            conns = [*self.pending, *(c for c in self.running.values() if c not in self.cut)]
            readable, _, _ = select.select(
                [c for c in [self.listener, *conns] if c is not None], [], [], POLL_S)
            for conn in readable:
                if conn is self.listener:
                    self._accept()
                elif conn in self.pending:
                    request = self._read(conn)
                    if request is not None:
                        return request
                else:
                    self._lifeline(conn)

    def forked(self, pid: int) -> None:
        conn, request, fds = self._run   # type: ignore[misc]
        self._run = None
        for fd in fds:
            os.close(fd)
        self.running[pid] = conn
        _send(conn, {"pid": pid, "parent": os.getpid(), "runs": self.lifetime.runs + 1})
        why = self.lifetime.served()
        if why:
            self._retire(why)

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()      # type: ignore[union-attr]
        except OSError:
            return
        if pools.peer(conn)[1] != os.getuid():
            conn.close()
            return
        self.pending[conn] = (b"", [])

    def _read(self, conn: socket.socket) -> Optional[dict[str, Any]]:
        try:
            data, fds, _flags, _addr = socket.recv_fds(conn, 65536, 4)
        except OSError:
            data, fds = b"", []
        so_far, held = self.pending[conn]
        held = held + list(fds)
        if not data:
            self._drop(conn, held)
            return None
        so_far += data
        if b"\n" not in so_far:          # a long request comes in pieces (its pipe with the first)
            self.pending[conn] = (so_far, held)
            return None
        del self.pending[conn]
        fds = held
        line = so_far.partition(b"\n")[0]
        try:
            message = json.loads(line)
        except ValueError:
            message = {}
        op = message.get("op")
        if op == "ping":
            _send(conn, {"pong": {"kind": "r", "pid": os.getpid(), "since": self.started,
                                  "retiring": self.retiring, "running": len(self.running),
                                  "summary": self.summary, "preloaded": self.preloaded,
                                  **self.lifetime.describe()}})
        elif op == "shutdown":
            _send(conn, {"bye": True})
            self._retire("asked to stop")
        elif op == "run" and self.retiring is None and len(fds) == 1:
            self.lifetime.touch()
            self._run = (conn, message, fds)
            return message
        elif op == "run":
            _send(conn, {"retired": f"the warm R parent is retiring: {self.retiring}"}
                  if self.retiring else {"error": "a run request carries its output's pipe"})
        else:
            _send(conn, {"error": f"unknown op {op!r}"})
        self._drop(conn, fds)
        return None

    def _drop(self, conn: socket.socket, fds: list[int] = ()) -> None:
        for fd in fds:
            os.close(fd)
        for fd in self.pending.pop(conn, (b"", []))[1]:
            if fd not in fds:
                os.close(fd)
        conn.close()

    def _lifeline(self, conn: socket.socket) -> None:
        """A running child's worker closed its connection: the child's group goes with it."""
        try:
            if conn.recv(4096):
                return
        except OSError:
            pass
        self.cut.add(conn)
        for pid, other in self.running.items():
            if other is conn:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass

    def _reap(self) -> None:
        while self.running:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                pid, status = 0, 0
            if pid == 0:
                return
            conn = self.running.pop(pid, None)
            if conn is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            try:
                os.killpg(pid, signal.SIGKILL)    # what the run left running in its group
            except OSError:
                pass
            _send(conn, {"exit": code})
            self.cut.discard(conn)
            conn.close()
            if not self.running:
                self.lifetime.idle()

    def _retire(self, why: str) -> None:
        self.retiring = why
        if self.listener is not None:
            self.listener.close()                 # new runs find no parent and start cold
            self.listener = None

    # --- the child -------------------------------------------------------------------------------

    def fork(self) -> int:
        """os.fork(): in the child, the run's own process state before R runs the driver."""
        pid = os.fork()
        if pid:
            return pid
        conn, request, fds = self._run        # type: ignore[misc]
        try:
            for other in [self.listener, *self.pending, *self.running.values(), conn]:
                if other is not None:
                    other.close()
            os.setsid()
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(fds[0], 1)
            os.dup2(fds[0], 2)
            for fd in (null, fds[0]):
                os.close(fd)
            os.environ.clear()
            os.environ.update(request.get("env") or {})
            os.chdir(request.get("cwd") or "/")
            if request.get("umask") is not None:
                os.umask(int(request["umask"]))
            self._own_temp_dir()
            for stream in (sys.stdout, sys.stderr):    # as PYTHONUNBUFFERED makes a cold one
                try:
                    stream.reconfigure(line_buffering=True, write_through=True)
                except (AttributeError, ValueError, OSError):
                    pass
            numpy = sys.modules.get("numpy")
            if numpy is not None:
                numpy.random.seed()
        except BaseException as exc:
            os.write(2, f"[r] the warm R child could not set up its run: {exc!r}\n".encode())
            os._exit(70)
        return 0

    def _own_temp_dir(self) -> None:
        """R's tempdir() is fixed at R's start: the child points R at a folder of its own (R's
        R_TempDir), so nothing a run leaves there is the parent's or the next run's. Forked
        children are marked as R's own fork (R_isForkedChild) does."""
        tempfile.tempdir = None            # where the run's TMPDIR says, as R's own would be
        self.child_tmp = tempfile.mkdtemp(prefix="Rtmp")
        libr = ctypes.CDLL(None)
        buffer = ctypes.create_string_buffer(os.fsencode(self.child_tmp))
        self._keep.append(buffer)
        ctypes.c_void_p.in_dll(libr, "R_TempDir").value = ctypes.addressof(buffer)
        ctypes.c_int.in_dll(libr, "R_isForkedChild").value = 1

    def exit_child(self, status: int) -> None:
        """The child's end: its output flushed, its temporary folder removed, no R clean-up (it
        would run the parent's exit handlers)."""
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        if self.child_tmp:
            shutil.rmtree(self.child_tmp, ignore_errors=True)
        os._exit(int(status))


def _send(conn: socket.socket, message: dict[str, Any]) -> None:
    try:
        conn.sendall(json.dumps(message).encode() + b"\n")
    except OSError:
        pass
