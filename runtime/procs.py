"""Processes and process groups, from /proc and signals: every module that starts, watches or stops
a run's worker (the supervisor, the python backend, the warm parent) uses these, and nothing else.
It stays light (the warm parent imports it): nothing but the standard library.

A worker leads its own process group (a new session), so stopping a run means stopping its group:
whatever the engine started goes with it. A process is named by its pid and its start time, so a
reused pid is never taken for the process that had it before.
"""
from __future__ import annotations

import io
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

__all__ = ["WORKER_PID_FILE", "find_worker", "group_alive", "group_members", "kill_group",
           "proc_start_ticks", "same_process_alive", "stop_worker", "unbuffered_std_streams",
           "wait_group_gone",
           "worker_group_alive"]

# Beside a run's spec: "PID START" of a worker forked from a warm parent (its command line is the
# parent's, so only this file says which run it serves).
WORKER_PID_FILE = "worker.pid"


def _pids() -> list[int]:
    """Every process id /proc lists now; [] without /proc."""
    try:
        return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]
    except OSError:
        return []


def _stat(pid: int) -> Optional[list[bytes]]:
    """/proc/PID/stat's fields after the command name (its field 3, the state, first), or None
    when no such process exists. The name may hold spaces and parentheses: it ends at the last ")"."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
        return data[data.rindex(b")") + 2:].split()
    except (OSError, ValueError):
        return None


def proc_start_ticks(pid: int) -> Optional[int]:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None when
    no such process exists. Two processes with one pid never share it."""
    fields = _stat(pid)
    try:
        if fields is None or fields[0] == b"Z":   # a zombie has finished: nothing runs there any more
            return None
        return int(fields[19])
    except (ValueError, IndexError):
        return None


def unbuffered_std_streams() -> None:
    """sys.stdout and sys.stderr written straight through to file descriptors 1 and 2 (whatever
    they now are): what PYTHONUNBUFFERED gives a cold worker, for a process that redirected them."""
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True,
                                  line_buffering=True, encoding="utf-8")
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True,
                                  line_buffering=True, encoding="utf-8", errors="backslashreplace")


def same_process_alive(pid: Any, start: Any) -> bool:
    """Whether `pid` runs and is the process that started at `start` ticks (any, when None)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    now = proc_start_ticks(pid)
    return now is not None and (start is None or now == start)


def group_alive(pgid: int) -> bool:
    """Whether process group `pgid` exists (zombies included; see group_members)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):   # PermissionError: the id is someone else's
        return False
    return True


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid`, read from /proc."""
    members = []
    for pid in _pids():
        fields = _stat(pid)
        try:
            if fields is not None and fields[0] != b"Z" and int(fields[2]) == pgid:
                members.append(pid)
        except (ValueError, IndexError):
            continue
    return members


def kill_group(pgid: int, sig: signal.Signals) -> None:
    """Signal a whole process group; nothing when it is gone."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def wait_group_gone(pgid: int, timeout_s: float) -> bool:
    """Wait until no live process of the group is left (a SIGKILLed child holding GPU memory takes
    a moment to exit and be reaped); False when some remain after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while group_alive(pgid) and group_members(pgid):   # zombies hold nothing
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)
    return True


def worker_group_alive(worker: Optional[dict[str, Any]]) -> bool:
    """Whether anything of a recorded worker's process group still runs (the worker itself, or
    children it left, which may hold GPU memory). A pid now naming another process means the
    old group is gone: Linux never reuses an id while a group of that id exists."""
    if not worker or not isinstance(worker.get("pid"), int):
        return False
    pid, pgid = worker["pid"], worker.get("pgid") or worker["pid"]
    now = proc_start_ticks(pid)
    if now is not None and worker.get("start") is not None and now != worker["start"]:
        return False
    return group_alive(pgid) and bool(group_members(pgid))


def stop_worker(worker: dict[str, Any], grace_s: float) -> str:
    """SIGTERM to a recorded worker's group, SIGKILL after `grace_s`; says what it did. Does
    nothing to a pid that now names another process (start times differ)."""
    pid, pgid = worker.get("pid"), worker.get("pgid") or worker.get("pid")
    if not same_process_alive(pid, worker.get("start")):
        if pgid and group_alive(pgid) and worker.get("start") is not None:
            # The leader is gone but its group lives on: the engine's children.
            kill_group(pgid, signal.SIGKILL)
            return "worker's leftover process group killed"
        return "worker already gone"
    kill_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and (group_alive(pgid)
                                           and proc_start_ticks(pid) is not None):
        time.sleep(0.02)
    if group_alive(pgid):
        kill_group(pgid, signal.SIGKILL)
        return f"worker group killed (SIGKILL) after a {grace_s:g} s grace period"
    return "worker group stopped (SIGTERM)"


def find_worker(spec_path: Path) -> Optional[dict[str, Any]]:
    """A live worker process started on `spec_path` (its command line names it), for a run whose
    owner died between starting the worker and recording it. A worker forked from a warm parent
    (whose command line is the parent's) is found by the pid file it writes beside the spec."""
    try:
        pid_text, _, start_text = (Path(spec_path).parent / WORKER_PID_FILE).read_text().partition(" ")
        pid, start = int(pid_text), int(start_text)
    except (OSError, ValueError):
        pass
    else:
        if same_process_alive(pid, start):
            return {"pid": pid, "pgid": pid, "start": start}
    needle = str(spec_path).encode()
    for pid in _pids():
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except OSError:
            continue
        if needle in cmdline and b"runtime.worker" in cmdline:
            try:
                pgid = os.getpgid(pid)
            except OSError:
                continue
            return {"pid": pid, "pgid": pgid, "start": proc_start_ticks(pid)}
    return None


def wait_child(proc: Any, timeout: Optional[float] = None) -> int:
    """`proc.wait(timeout)`, for a `subprocess.Popen` woken the moment the child exits (through a
    pidfd, Linux 5.3 and later) instead of by Popen's own polling, which sleeps up to 50 ms between
    looks: a short run's caller learns of its end that much sooner. Other kinds of child, and
    systems without pidfds, wait as `proc.wait` does."""
    if (timeout is None or not isinstance(proc, subprocess.Popen) or proc.returncode is not None
            or not hasattr(os, "pidfd_open")):
        return proc.wait(timeout)
    try:
        fd = os.pidfd_open(proc.pid)
    except OSError:   # already reaped, or pidfds not allowed here
        return proc.wait(timeout)
    try:
        ready, _, _ = select.select([fd], [], [], max(0.0, timeout))
    finally:
        os.close(fd)
    if not ready:
        raise subprocess.TimeoutExpired(proc.args, timeout)
    return proc.wait()
