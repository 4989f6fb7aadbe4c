"""The environments under HOME/envs: list, remove, and prune least recently used first.

An environment's size counts each of its files once (hard links inside it counted once); files
shared with uv's cache through hard links are counted too, so the figure is what the environment
holds, not what removing it frees.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import Conflict, ConfigError, NotFound
from .layout import LAST_USED, META_FILE, envs_dir, key_locked, read_meta, uv_cache_dir

__all__ = ["EnvRecord", "DEFAULT_MAX_SIZE", "list_envs", "parse_size", "prune_envs", "remove_env"]

DEFAULT_MAX_SIZE = "10G"
STALE_STAGING_S = 6 * 3600      # a staging folder this old, not locked, is a dead build's
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


@dataclass(frozen=True)
class EnvRecord:
    key: str
    path: Path
    profile: str | None
    python_version: str | None
    tool: str | None
    recipe: str | None
    created: float | None
    last_used: float
    size_bytes: int

    def to_dict(self) -> dict:
        return {"key": self.key, "path": str(self.path), "profile": self.profile,
                "python_version": self.python_version, "tool": self.tool, "recipe": self.recipe,
                "created": self.created, "last_used": self.last_used, "size_bytes": self.size_bytes}


def parse_size(text: str | int) -> int:
    """'10G', '500M', '2.5GiB', '1024' -> bytes (binary units)."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), re.I)
    if not match:
        raise ConfigError(f"Invalid size {text!r}: expected a number with an optional unit "
                          "K, M, G or T (e.g. 10G)")
    return int(float(match.group(1)) * _UNITS[match.group(2).upper()])


def list_envs(home, *, with_size: bool = True) -> list[EnvRecord]:
    """Every complete environment, most recently used first."""
    root = envs_dir(home)
    records = []
    if not root.is_dir():
        return records
    for entry in root.iterdir():
        if entry.name.startswith(".") or not (entry / META_FILE).is_file():
            continue
        records.append(_record(entry, with_size=with_size))
    records.sort(key=lambda r: r.last_used, reverse=True)
    return records


def _record(path: Path, *, with_size: bool) -> EnvRecord:
    meta = read_meta(path)
    try:
        last_used = (path / LAST_USED).stat().st_mtime
    except OSError:
        last_used = meta.get("created") or 0.0
    return EnvRecord(key=path.name, path=path, profile=meta.get("profile"),
                     python_version=meta.get("python_version"), tool=meta.get("tool"),
                     recipe=meta.get("recipe_name") or meta.get("recipe"),
                     created=meta.get("created"), last_used=last_used,
                     size_bytes=_tree_size(path) if with_size else 0)


def _tree_size(path: Path) -> int:
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, dirs, files in os.walk(path):
        for name in files + dirs:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            ident = (st.st_dev, st.st_ino)
            if ident in seen:
                continue
            seen.add(ident)
            total += st.st_size if not os.path.isdir(os.path.join(root, name)) else 0
    return total


def _resolve_key(root: Path, key: str) -> Path:
    """A full key or a unique prefix of one (as `run envs list` prints them)."""
    if not key or "/" in key or key.startswith("."):
        raise ConfigError(f"Invalid environment key {key!r}")
    exact = root / key
    if (exact / META_FILE).is_file():
        return exact
    matches = [p for p in root.glob(f"{key}*") if (p / META_FILE).is_file()] if root.is_dir() else []
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise NotFound(f"No environment {key!r} under {root}")
    raise ConfigError(f"Environment key {key!r} is ambiguous: "
                      f"{', '.join(sorted(p.name for p in matches))}")


def remove_env(home, key: str) -> EnvRecord:
    """Remove one environment; refused while a build holds its lock."""
    root = envs_dir(home)
    path = _resolve_key(root, key)
    if key_locked(root, path.name):
        raise Conflict(f"Environment {path.name} is being built right now; try again when it is done")
    record = _record(path, with_size=True)
    _discard(root, path)
    return record


def _discard(root: Path, path: Path) -> None:
    # rename first: the environment disappears at once, never half-removed under its name
    trash = root / ".tmp" / f"trash-{path.name}-{uuid.uuid4().hex[:8]}"
    trash.parent.mkdir(parents=True, exist_ok=True)
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def prune_envs(home, *, max_size_bytes: int, keep: Sequence[str] = (),
               dry_run: bool = False) -> list[EnvRecord]:
    """Remove environments, least recently used first, until the rest fit in `max_size_bytes`.
    Environments being built and those named in `keep` stay. Also clears staging folders of dead
    builds and remembered resolutions of environments that are gone."""
    root = envs_dir(home)
    records = sorted(list_envs(home), key=lambda r: r.last_used)   # oldest first
    total = sum(r.size_bytes for r in records)
    removed = []
    for record in records:
        if total <= max_size_bytes:
            break
        if record.key in keep or key_locked(root, record.key):
            continue
        if not dry_run:
            _discard(root, record.path)
        removed.append(record)
        total -= record.size_bytes
    if not dry_run:
        _clear_leftovers(root)
    return removed


def _clear_leftovers(root: Path) -> None:
    # .locks/*.lock files stay: unlinking one while another process has it open but not yet
    # locked would let a third process lock a new file of the same name and build alongside it.
    tmp = root / ".tmp"
    if tmp.is_dir():
        now = time.time()
        for entry in tmp.iterdir():
            key = entry.name.split("-", 1)[0]
            try:
                age = now - entry.stat().st_mtime
            except OSError:
                continue
            if entry.name.startswith("trash-") or (age > STALE_STAGING_S and not key_locked(root, key)):
                shutil.rmtree(entry, ignore_errors=True)
    resolved = root / ".resolved"
    if resolved.is_dir():
        for memo in resolved.glob("*.json"):
            try:
                key = json.loads(memo.read_text()).get("key")
            except (OSError, ValueError):
                key = None
            if not key or not (root / str(key) / META_FILE).is_file():
                memo.unlink(missing_ok=True)


def cache_size(home) -> int:
    """Bytes in uv's cache under the home."""
    path = uv_cache_dir(home)
    return _tree_size(path) if path.is_dir() else 0
