"""The warm parent of python runs (a fork server): `python -m runtime.forkserver --name NAME ...`.

It imports the heavy libraries once (the worker, numpy, pandas, torch: what the engines declare
and what earlier runs imported), then starts every run in a fresh child forked from itself, so a
run reaches its engine in milliseconds and runs stay as isolated as cold ones: each child leads its
own session and process group, writes its own log and result, and is killed and reaped exactly like
a cold worker. The parent itself never runs an engine, never opens a SQLite file, never touches
CUDA and keeps a single thread, so a fork inherits nothing in a bad state; it checks that after
every import (runtime.forksafety) and refuses (retires) when an import broke it.

Clients (runtime.warm) talk to it over an abstract Unix socket, one connection per run, JSON lines:

    client -> {"op": "run", "spec": PATH, "log": PATH, "env": {...}, "cwd": DIR, "umask": N,
               "needs": [MODULE, ...]}
    parent -> {"pid": N, "start": TICKS, "parent": PID, "runs": K, "spare": B}   the child runs
                                                    (B: it was the spare, forked ahead)
           |  {"retired": REASON}                           ask a new parent (this one is ending)
    parent -> {"exit": CODE}     when the child has ended (CODE < 0: killed by that signal)

    client -> {"op": "ping"}     -> {"pong": {...its state}}
    client -> {"op": "shutdown"} -> {"bye": true}, and the parent exits

Only processes of the parent's own user may connect (SO_PEERCRED). This is the pool protocol of
runtime.pools, as warm Spark workers speak it too; the parent retires (finishes the runs it
started, then exits) by the same policy (runtime.pools.Lifetime): after `--max-runs` runs, when
its owner process is gone, or after `--idle-s` seconds without a run; and, its own reason, when its
environment changes (a package added or removed, a runtime source file edited).
"""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Optional

from .forksafety import fingerprint, unsafe_state, watched_paths
from .pools import Lifetime, parse_owner
from .procs import WORKER_PID_FILE, proc_start_ticks, unbuffered_std_streams

__all__ = ["main", "unsafe_state", "WORKER_PID_FILE"]

MAX_LEARNED = 64
LEARNED_LINE_MAX = 3800   # below PIPE_BUF: a child's line reaches the pipe in one piece
LOOP_S = 1.0
# The next spare is forked this long after a run started, not at once: the fork (10-20 ms of page
# tables with torch loaded) would take a core from the run that just began.
SPARE_DELAY_S = 0.3
_SO_PEERCRED_FMT = "3i"


# --- the parent ----------------------------------------------------------------------------------

class Parent:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.state_path = Path(args.state) if args.state else None
        self.state = self._read_state()
        self.preloaded: list[str] = []
        self.skipped: dict[str, str] = {}
        self.lifetime = Lifetime(max_runs=args.max_runs, idle_s=args.idle_s,
                                 owner=parse_owner(args.owner))
        self.children: dict[int, socket.socket] = {}
        self.spare: Optional[tuple[int, Optional[int], int]] = None   # (pid, start, request pipe)
        self.spare_due = 0.0
        self.retiring: Optional[str] = None
        self.detach = False   # exit now, leaving running children to end on their own
        self.learn_queue: list[str] = []
        self.buffers: dict[socket.socket, bytes] = {}
        self.started = time.time()
        self.startup_s = 0.0

    @property
    def runs(self) -> int:
        return self.lifetime.runs

    # -- state shared between generations: what runs imported, what cannot be preloaded --------

    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads(self.state_path.read_text()) if self.state_path else {}
        except (OSError, ValueError):
            data = {}
        return {"learned": list(data.get("learned") or []), "unsafe": dict(data.get("unsafe") or {})}

    def _write_state(self) -> None:
        if self.state_path is None:
            return
        tmp = self.state_path.with_name(f"{self.state_path.name}.{os.getpid()}.tmp")
        try:
            tmp.write_text(json.dumps(self.state, indent=1))
            os.replace(tmp, self.state_path)
        except OSError:
            pass

    # -- imports --------------------------------------------------------------------------------

    def preload(self, name: str) -> bool:
        """Import `name` here; False (and the parent retires) when that left it unsafe to fork."""
        if name in self.preloaded or name in self.skipped or name in self.state["unsafe"]:
            return True
        before = set(sys.modules)
        try:
            importlib.import_module(name)
        except BaseException as exc:   # the run imports it itself (and says what is wrong)
            self.skipped[name] = f"{type(exc).__name__}: {exc}"
            left = sorted(set(sys.modules) - before)
            if left:   # half-imported modules stay behind: a child would find them broken
                return self._unsafe(name, f"its import failed half-way ({self.skipped[name]}; "
                                          f"left {len(left)} module(s) loaded)")
            problem = unsafe_state()
            return problem is None or self._unsafe(name, problem)
        problem = unsafe_state()
        if problem is not None:
            return self._unsafe(name, problem)
        self.preloaded.append(name)
        return True

    def _unsafe(self, name: str, problem: str) -> bool:
        self.state["unsafe"][name] = problem
        self._write_state()
        print(f"forkserver: importing {name} left this process unsafe to fork: {problem}; "
              "retiring (the next parent will not import it)", flush=True)
        self.retire(f"importing {name} left it unsafe to fork ({problem})")
        return False

    def _watch(self) -> None:
        """After imports: what to watch for changes, and every object so far kept out of the
        garbage collector's passes (gc.freeze): a child's collection would otherwise walk and
        write to every object the imports made, copying their memory pages one by one."""
        self.watched = watched_paths()
        self.fingerprint = fingerprint(self.watched)
        gc.collect()
        gc.freeze()

    # -- the loop -------------------------------------------------------------------------------

    def serve(self, listener: socket.socket) -> int:
        started = time.perf_counter()
        for name in ["runtime.worker", "ctypes", *self.args.preload, *self.state["learned"]]:
            if name and not self.preload(name):
                break
        # --later: imported once it serves, one module at a time between runs (idle imports)
        self.learn_queue += [name for name in self.args.later if name not in self.preloaded]
        from .engine import freeze_installed_engines

        freeze_installed_engines()   # a child finds its engine without scanning every package
        _inspect_thread_pools()
        self.startup_s = round(time.perf_counter() - started, 3)
        self._watch()
        if self.retiring is not None:   # an import made it unsafe: the next parent skips it
            return 4
        print(f"forkserver {os.getpid()}: ready in {self.startup_s:.2f} s, preloaded "
              f"{', '.join(self.preloaded)}", flush=True)

        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        os.set_blocking(self.wake_r, False)
        signal.set_wakeup_fd(self.wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._on_term)
        self.learn_r, self.learn_w = os.pipe()
        os.set_blocking(self.learn_r, False)
        self.listener = listener
        self.sel = selectors.DefaultSelector()
        self.sel.register(listener, selectors.EVENT_READ, "accept")
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        self.sel.register(self.learn_r, selectors.EVENT_READ, "learn")
        learned_buf = b""
        while True:
            wait = 0.0 if self.learn_queue and not self.buffers else (
                LOOP_S if self.spare is not None else min(
                    LOOP_S, max(0.0, self.spare_due - time.monotonic())))
            for key, _ in self.sel.select(wait):
                what = key.data
                if what == "accept":
                    self._accept()
                elif what == "wake":
                    self._drain(self.wake_r)
                elif what == "learn":
                    learned_buf = self._learned(learned_buf + self._drain(self.learn_r))
                else:
                    self._readable(key.fileobj)
            self._reap()
            if self.learn_queue and not self.buffers:   # idle: import what the runs used
                # One module a turn: a run that asks meanwhile is forked before the next import
                # (the spare, forked before the imports, would lack them: none meanwhile).
                self.drop_spare()
                if self.retiring is None:
                    self.preload(self.learn_queue.pop(0))
                else:
                    self.learn_queue.clear()
                if not self.learn_queue:
                    _inspect_thread_pools()
                    self._watch()
            if self._should_exit():
                return 0
            if time.monotonic() >= self.spare_due and not self.learn_queue:
                self.fork_spare()

    def _on_term(self, *_: Any) -> None:
        self.retire("asked to stop (SIGTERM)")
        self.detach = True

    def _should_exit(self) -> bool:
        if self.lifetime.owner_gone():
            self.retire("its owner process is gone")
            return True   # the runs it started go on; nobody is left to tell their ends to
        if self.retiring is not None:
            return not self.children
        reason = self.lifetime.why_retire(busy=bool(self.children or self.buffers))
        if reason is not None:
            self.retire(reason)
            return True
        return self.detach

    def retire(self, reason: str) -> None:
        """Take no new run; exit once the runs started here have ended."""
        if self.retiring is not None:
            return
        self.retiring = reason
        self.drop_spare()
        try:   # the name is free at once: a new parent can start while this one finishes
            self.sel.unregister(self.listener)
        except (AttributeError, KeyError, ValueError):
            pass
        try:
            self.listener.close()
        except AttributeError:
            pass
        print(f"forkserver {os.getpid()}: retiring: {reason}", flush=True)

    @staticmethod
    def _drain(fd: int) -> bytes:
        chunks = []
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def _learned(self, data: bytes) -> bytes:
        *lines, rest = data.split(b"\n")
        known = set(self.state["learned"])
        for line in lines:
            try:
                names = json.loads(line)
            except ValueError:
                continue
            for name in names if isinstance(names, list) else []:
                if (isinstance(name, str) and name not in known and name not in self.state["unsafe"]
                        and len(known) < MAX_LEARNED and _installed(name)):
                    known.add(name)
                    self.state["learned"].append(name)
                    self.learn_queue.append(name)
        if self.learn_queue:
            self._write_state()
        return rest

    # -- connections ----------------------------------------------------------------------------

    def _accept(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return
        pid, uid, _gid = struct.unpack(_SO_PEERCRED_FMT, conn.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize(_SO_PEERCRED_FMT)))
        if uid != os.getuid():   # only our own user may start runs as us
            conn.close()
            return
        conn.setblocking(False)
        self.buffers[conn] = b""
        self.sel.register(conn, selectors.EVENT_READ, "conn")
        self.lifetime.touch()

    def _readable(self, conn: socket.socket) -> None:
        try:
            chunk = conn.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:   # the client went away before asking anything
            self._drop(conn)
            return
        data = self.buffers.get(conn, b"") + chunk
        if b"\n" not in data:
            self.buffers[conn] = data
            return
        line, _, _ = data.partition(b"\n")
        self.sel.unregister(conn)
        self.buffers.pop(conn, None)
        conn.setblocking(True)
        try:
            request = json.loads(line)
        except ValueError:
            self._send(conn, {"error": "the request is not JSON"})
            conn.close()
            return
        self.lifetime.touch()
        op = request.get("op")
        if op == "ping":
            self._send(conn, {"pong": self.describe()})
            conn.close()
        elif op == "shutdown":
            self._send(conn, {"bye": True})
            conn.close()
            self.retire("asked to shut down")
            self.detach = True
        elif op == "run":
            self._start_run(conn, request)
        else:
            self._send(conn, {"error": f"unknown op {op!r}"})
            conn.close()

    def _drop(self, conn: socket.socket) -> None:
        try:
            self.sel.unregister(conn)
        except (KeyError, ValueError):
            pass
        self.buffers.pop(conn, None)
        conn.close()

    @staticmethod
    def _send(conn: socket.socket, message: dict[str, Any]) -> bool:
        try:
            conn.sendall(json.dumps(message).encode() + b"\n")
            return True
        except OSError:   # the client is gone; the run goes on without it
            return False

    def describe(self) -> dict[str, Any]:
        return {**self.lifetime.describe(), "pid": os.getpid(), "kind": "python",
                "home": self.args.home, "python": sys.executable, "device": self.args.device,
                "summary": f"{self.args.device} {sys.executable}",
                "preloaded": self.preloaded, "skipped": self.skipped,
                "running": sorted(self.children), "retiring": self.retiring,
                "spare": self.spare[0] if self.spare else None, "startupS": self.startup_s,
                "learned": self.state["learned"], "unsafe": self.state["unsafe"],
                "since": self.started}

    # -- runs -----------------------------------------------------------------------------------

    def _start_run(self, conn: socket.socket, request: dict[str, Any]) -> None:
        if self.retiring is None and fingerprint(self.watched) != self.fingerprint:
            self.retire("its environment changed (a package or a source file)")
        count = len(self.preloaded)
        for name in request.get("needs") or []:
            if self.retiring is not None:
                break
            self.preload(str(name))
        if len(self.preloaded) != count:
            _inspect_thread_pools()
            self._watch()
            self.drop_spare()   # forked before these imports
        if self.retiring is not None:
            self._send(conn, {"retired": self.retiring})
            conn.close()
            return
        retire = self.lifetime.served()
        request["runs"] = self.runs
        self.spare_due = time.monotonic() + SPARE_DELAY_S
        spare, self.spare = self.spare, None
        if spare is not None:   # forked ahead of time: it only needs the request
            pid, start, pipe = spare
            _write_all(pipe, json.dumps(request).encode())
            os.close(pipe)
        else:
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _detach(self, conn)
                _run(self, request)   # never returns
            start = proc_start_ticks(pid)
        self.children[pid] = conn
        if not self._send(conn, {"pid": pid, "start": start, "parent": os.getpid(),
                                 "runs": self.runs, "spare": spare is not None}):
            self.children[pid] = None
        if retire is not None:
            self.retire(retire)

    # -- the spare: the next run's child, forked while the parent waits --------------------------

    def fork_spare(self) -> None:
        """Fork the next run's child now, off the run's path: it detaches and waits for its
        request on a pipe. A spare is dropped whenever the parent changes (an import), so it is
        always a copy of the parent as it is."""
        if self.spare is not None or self.retiring is not None:
            return
        read, write = os.pipe()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            os.close(write)
            _detach(self, None)
            _retitle([sys.executable, "-m", "runtime.forkserver", f"--spare-of={os.getppid()}"])
            request = _read_all(read)
            if not request:   # dropped, or the parent is gone
                os._exit(0)
            _run(self, json.loads(request))   # never returns
        os.close(read)
        self.spare = (pid, proc_start_ticks(pid), write)

    def drop_spare(self) -> None:
        if self.spare is not None:
            os.close(self.spare[2])   # it reads end-of-file and exits; _reap collects it
            self.spare = None

    def _reap(self) -> None:
        while True:   # runs, and dropped spares (not in self.children: nobody to tell)
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in self.children and len(self.children) == 1:
                self.lifetime.idle()   # its last run ended: idle from now
            conn = self.children.pop(pid, None)
            if conn is not None:
                self._send(conn, {"exit": os.waitstatus_to_exitcode(status)})
                conn.close()


def _inspect_thread_pools() -> None:
    """Find the loaded BLAS and OpenMP libraries once, here, so each child only sets their thread
    counts (runtime.worker); finding them costs a child about 6 ms."""
    from . import worker

    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return
    worker.THREAD_POOLS = ThreadpoolController()


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except InterruptedError:
            continue
        if not chunk:
            os.close(fd)
            return b"".join(chunks)
        chunks.append(chunk)


def _detach(parent: Parent, conn: Optional[socket.socket]) -> None:
    """In a new child: its own session and process group (cancels signal the group), default
    signal handling, and none of the parent's sockets and pipes."""
    try:
        os.setsid()
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.set_wakeup_fd(-1)
        parent.sel.close()
        for sock in (conn, *parent.buffers, *[c for c in parent.children.values() if c]):
            if sock is not None:
                sock.close()
        if parent.retiring is None:
            parent.listener.close()
        for fd in (parent.wake_r, parent.wake_w, parent.learn_r):
            os.close(fd)
    except BaseException:
        traceback.print_exc()
        os._exit(70)


def _run(parent: Parent, request: dict[str, Any]) -> None:
    """The run, in the detached child: the run's own files and environment, then the worker,
    exactly as `python -m runtime.worker SPEC` would run it."""
    code = 70
    try:
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        unbuffered_std_streams()   # every write reaches the log at once
        os.environ.clear()
        os.environ.update(request.get("env") or {})
        cwd = request.get("cwd") or "/"
        os.chdir(cwd)
        if sys.path and sys.path[0] == parent.args.cwd:   # `-m` put the starter's folder first
            sys.path[0] = cwd
        if request.get("umask") is not None:
            os.umask(int(request["umask"]))
        sys.argv = ["-m", request["spec"]]
        _retitle([sys.executable, "-m", "runtime.worker", request["spec"]])
        me = os.getpid()
        Path(request["spec"]).with_name(WORKER_PID_FILE).write_text(f"{me} {proc_start_ticks(me)}")
        numpy = sys.modules.get("numpy")
        if numpy is not None:   # a cold worker seeds its global generator from the OS at import
            numpy.random.seed()
        before = set(sys.modules)

        from . import worker

        code = worker.main([request["spec"]], warm={"parent": os.getppid(), "runs": request["runs"],
                                                   "preloaded": len(parent.preloaded)})
        _report_imports(before, parent.learn_w)
        worker.teardown()
    except BaseException:
        try:
            traceback.print_exc()
            sys.stderr.flush()
        except BaseException:
            pass
    finally:
        os._exit(code)


def _installed(name: str) -> bool:
    """Whether `name` is a module of an installed package, as this parent would import it. A run
    reports what it imported; only installed libraries are taken on its word, never a module that
    would come from a working folder or a run's files (on a shared server, one user's code must
    never reach the parent every user's runs are forked from)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError, AttributeError):
        return False
    origin = (spec.origin or "") if spec is not None else ""
    return "site-packages" in origin or "dist-packages" in origin


def _retitle(args: list[str]) -> None:
    """Make this process's command line read as a cold worker's (`ps`, and whatever finds workers
    by their command line, see `python -m runtime.worker SPEC`): the words are written over the
    parent's own argument strings (the memory /proc/PID/cmdline shows), padded with NULs, cut
    short if longer (the client gives the parent room: --room)."""
    import ctypes

    try:
        with open("/proc/self/stat", "rb") as fh:
            data = fh.read()
        fields = data[data.rindex(b")") + 2:].split()
        start, end = int(fields[45]), int(fields[46])   # arg_start, arg_end (fields 48 and 49)
    except (OSError, ValueError, IndexError):
        return
    size = end - start
    if size <= 1:
        return
    words = b"\0".join(os.fsencode(a) for a in args)[:size - 1]
    ctypes.memmove(start, words.ljust(size, b"\0"), size)


def _report_imports(before: set[str], fd: int) -> None:
    """Tell the parent which installed libraries this run imported that it had not: the next runs
    find them preloaded. Only packages of the environment (site-packages), never the recipe's own
    code nor the run's folder."""
    names = []
    for name in set(sys.modules) - before:
        parts = name.split(".")
        # a new library, or a new module right below one the parent has (pyarrow.dataset,
        # torch._dynamo, which torch's optimisers import on their first step). Nothing deeper:
        # importing a library's internals on their own can break its import order (an import
        # that fails half-way retires the parent, and the module is never tried again).
        if (len(parts) > 2 or parts[0].startswith("_") or name == "__main__"
                or (len(parts) == 2 and parts[0] not in before)):
            continue
        path = getattr(sys.modules.get(name), "__file__", None) or ""
        if "site-packages" in path or "dist-packages" in path:
            names.append(name)
    line = json.dumps(sorted(names))
    while len(line) > LEARNED_LINE_MAX and names:
        names.pop()
        line = json.dumps(sorted(names))
    try:
        os.write(fd, line.encode() + b"\n")
    except OSError:
        pass


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m runtime.forkserver")
    parser.add_argument("--name", required=True, help="the abstract Unix socket name to listen on")
    parser.add_argument("--preload", default="", help="modules to import first, comma-separated")
    parser.add_argument("--later", default="",
                        help="modules to import once it serves, between runs, comma-separated")
    parser.add_argument("--state", help="JSON file of learned and unsafe imports (kept per key)")
    parser.add_argument("--max-runs", type=int, default=200)
    parser.add_argument("--owner", help="PID[:START]: exit when that process is gone")
    parser.add_argument("--idle-s", type=float, default=0.0, help="exit after S idle seconds")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--home", default=None, help="the runtime home it serves (what it lists)")
    parser.add_argument("--room", default="", help="padding: room for a child's command line")
    args = parser.parse_args(argv)
    args.preload = [m for m in args.preload.split(",") if m]
    args.later = [m for m in args.later.split(",") if m]
    args.cwd = os.getcwd()
    from .dispatch import THREAD_ENV_VARS   # pydantic only: no thread pool is loaded yet

    # Every thread pool is imported at one thread (no pool thread exists to fork over); each
    # child sets its own counts (runtime.worker: threadpoolctl, numexpr, torch.set_num_threads).
    for name in THREAD_ENV_VARS:
        os.environ[name] = "1"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind("\0" + args.name)
    except OSError as exc:   # another parent of this key is there first: it serves
        print(f"forkserver: {args.name} is taken ({exc}); not starting", flush=True)
        return 3
    listener.listen(64)   # clients queue here while the imports run
    return Parent(args).serve(listener)


if __name__ == "__main__":
    sys.exit(main())
