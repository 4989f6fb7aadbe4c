"""Two checks of the warm parent (runtime.forkserver) before it forks a run: is it safe to fork
this process now (no other thread, no CUDA, no open SQLite file), and has its environment changed
since it started (a package installed or removed, a loaded source file edited). Standard library
only: the warm parent imports it.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Optional

__all__ = ["FORK_SAFE_THREADS", "SQLITE_SUFFIXES", "fingerprint", "unsafe_state", "watched_paths"]

# Threads that are safe across fork: jemalloc (pyarrow's allocator) stops its background thread in
# its prefork handler and restarts it on demand in the child.
FORK_SAFE_THREADS = frozenset({"jemalloc_bg_thd"})
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3", ".db-wal", ".db-journal", ".db-shm")


# --- is it safe to fork? -----------------------------------------------------------------------

def unsafe_state() -> Optional[str]:
    """Why forking this process now would hand a child something in a bad state, or None."""
    threads = []
    me = str(os.getpid())
    try:
        for tid in os.listdir("/proc/self/task"):
            if tid == me:
                continue
            try:
                with open(f"/proc/self/task/{tid}/comm") as fh:
                    name = fh.read().strip()
            except OSError:   # it just ended
                continue
            if name not in FORK_SAFE_THREADS:
                threads.append(name)
    except OSError:
        return "no /proc/self/task to count threads in"
    if threads:
        return f"it runs {len(threads)} more thread(s) ({', '.join(sorted(set(threads)))})"
    torch = sys.modules.get("torch")
    cuda = getattr(torch, "cuda", None)
    if cuda is not None and hasattr(cuda, "is_initialized") and cuda.is_initialized():
        return "CUDA is initialised"
    # The driver library is loaded by the first CUDA call (even torch.cuda.is_available()), and
    # a driver initialised before a fork does not work in the child.
    try:
        with open("/proc/self/maps") as fh:
            if any("libcuda.so" in line for line in fh):
                return "the CUDA driver (libcuda) is loaded"
    except OSError:
        pass
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.endswith(SQLITE_SUFFIXES):
            return f"a SQLite file is open ({target})"
    return None


# --- the environment's fingerprint ---------------------------------------------------------------

def watched_paths() -> list[str]:
    """What changes when the environment does: every site-packages folder on sys.path (installing
    or removing a package touches it), and the source file of every module loaded here that is
    neither installed nor of the standard library (the runtime's, an engine's, one on PYTHONPATH:
    editing it). A working folder's other files come and go without retiring anyone."""
    import sysconfig

    installed = ("site-packages", "dist-packages")
    stdlib = tuple(p for p in {sysconfig.get_paths().get("stdlib"),
                               sysconfig.get_paths().get("platstdlib")} if p)
    paths = [entry for entry in sys.path if any(word in entry for word in installed)]
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if (path and not any(word in path for word in installed)
                and not (stdlib and path.startswith(stdlib))):
            paths.append(path)
    return paths


def fingerprint(paths: list[str]) -> tuple:
    """The modification times of `paths` (a stat each: well under a millisecond for a parent)."""
    marks: list[Any] = []
    for path in paths:
        try:
            marks.append(os.stat(path).st_mtime_ns)
        except OSError:
            marks.append(None)
    return tuple(marks)
