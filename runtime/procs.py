"""Process identity from /proc, shared by the supervisor, the python backend and the warm parent
(which must stay light: this module imports nothing but the standard library)."""
from __future__ import annotations

from typing import Optional

__all__ = ["proc_start_ticks"]


def proc_start_ticks(pid: int) -> Optional[int]:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or None when
    no such process exists. Two processes with one pid never share it."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            data = fh.read()
    except (OSError, ValueError):
        return None
    try:
        fields = data[data.rindex(b")") + 2:].split()
        if fields[0] == b"Z":   # a zombie has finished: nothing runs there any more
            return None
        return int(fields[19])
    except (ValueError, IndexError):
        return None
