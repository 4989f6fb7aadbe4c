"""The installed distributions' entry points (engines, backends), read once for a process.

`importlib.metadata.entry_points(group=...)` reads every distribution's metadata on each call
(about 10 ms in a virtual environment of 150 packages); a `run train` asked eleven times before its
worker started. Here they are read once and again only when a folder on `sys.path` changes, which
installing, upgrading or removing a package does (its metadata folder is made or removed there), so a
long-lived server still sees an engine installed after it started.
"""
from __future__ import annotations

import os
import sys
import threading
from importlib import metadata
from typing import Optional

_lock = threading.Lock()
_read: Optional[tuple[tuple, dict[str, list[metadata.EntryPoint]]]] = None


def _path_state() -> tuple:
    state = []
    for entry in sys.path:
        try:
            state.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            state.append((entry, None))
    return tuple(state)


def group(name: str) -> dict[str, metadata.EntryPoint]:
    """The entry points of group `name` by name, as `{ep.name: ep for ep in
    metadata.entry_points(group=name)}` gives them (a later distribution's duplicate name wins)."""
    global _read
    state = _path_state()
    with _lock:
        if _read is None or _read[0] != state:
            found = metadata.entry_points()
            groups: dict[str, list[metadata.EntryPoint]] = {}
            if isinstance(found, dict):   # Python 3.11: SelectableGroups (read through dict's
                for found_group, eps in dict.items(found):   # items: its own methods warn)
                    groups[found_group] = list(eps)
            else:                         # 3.12 and later: EntryPoints
                for ep in found:
                    groups.setdefault(ep.group, []).append(ep)
            _read = (state, groups)
        return {ep.name: ep for ep in _read[1].get(name, ())}
