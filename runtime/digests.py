"""SHA-256 digests of what the runtime stores and keys: an artifact's bytes or file, a folder, a
model, a requirement set. One function, so every stored thing is named the same way.

A folder has two schemes, both kept because digests already written name things on disk:
`entries` (recipe artifacts under HOME/recipes/<sha256>, model digests) and `environment` (the
recipe's part of an environment key under HOME/envs: changing it would rebuild every environment).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Optional

__all__ = ["FOLDER_EXCLUDES", "digest", "excluded"]

# Left out of a folder's digest (and of a stored copy): by-products that change without the
# recipe changing.
FOLDER_EXCLUDES = ("__pycache__", ".git", ".hg", ".svn", ".venv", "venv", ".tox", ".mypy_cache",
                   ".pytest_cache", "build", "dist", ".eggs", ".DS_Store", ".ipynb_checkpoints")
_EXCLUDED_SUFFIXES = (".pyc", ".pyo", ".egg-info")
# The environment scheme's own, narrower rule (folders only; files: compiled Python).
_ENV_SKIP_DIRS = {"__pycache__", ".git", "build", "dist", ".eggs", ".tox", ".venv", ".mypy_cache",
                  ".pytest_cache"}
_BLOCK = 1 << 20


def excluded(name: str) -> bool:
    """Whether a file or folder name is a by-product left out of a folder's `entries` digest."""
    return name in FOLDER_EXCLUDES or name.endswith(_EXCLUDED_SUFFIXES)


def digest(source: bytes | bytearray | str | os.PathLike | Mapping[str, Any] | list,
           *, exclude: bool = False, preread: Optional[Mapping[str, bytes]] = None,
           scheme: Literal["entries", "environment"] = "entries") -> str:
    """The hex SHA-256 of `source`:

    - bytes: of the bytes;
    - a path to a file: of its content (read in blocks);
    - a path to a folder: of its files, by `scheme`: `entries` hashes each file's relative path
      and content digest, sorted (`exclude` leaves out FOLDER_EXCLUDES; `preread` maps relative
      paths to bytes already read, for a caller that must hash exactly the bytes it then uses);
      `environment` hashes relative names and contents as os.walk meets them, build leftovers
      left out;
    - a mapping or list (a requirement set, an environment request): of its canonical JSON.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return hashlib.sha256(source).hexdigest()
    if isinstance(source, (Mapping, list, tuple)):
        text = json.dumps(source, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()
    path = Path(source)
    if not path.is_dir():
        return _file(path, hashlib.sha256()).hexdigest()
    if scheme == "environment":
        return _environment_tree(path)
    if scheme != "entries":
        raise ValueError(f"unknown folder digest scheme {scheme!r}")
    return _entries_tree(path, exclude=exclude, preread=preread)


def _file(path: Path, sha: Any) -> Any:
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            sha.update(block)
    return sha


def walk(folder: Path, exclude: bool) -> Iterable[Path]:
    """Every file (and link) under `folder`, by-products left out when `exclude`."""
    for dirpath, dirnames, filenames in os.walk(folder):
        if exclude:
            dirnames[:] = [d for d in dirnames if not excluded(d)]
        dirnames.sort()
        for name in sorted(filenames):
            if exclude and excluded(name):
                continue
            yield Path(dirpath) / name


def _entries_tree(folder: Path, *, exclude: bool, preread: Optional[Mapping[str, bytes]]) -> str:
    sha = hashlib.sha256()
    for path in sorted(walk(folder, exclude), key=lambda p: p.relative_to(folder).as_posix()):
        rel = path.relative_to(folder).as_posix()
        if path.is_symlink():
            sha.update(f"L {rel}\0{os.readlink(path)}\n".encode())
            continue
        one = hashlib.sha256(preread[rel]).hexdigest() if preread and rel in preread \
            else _file(path, hashlib.sha256()).hexdigest()
        sha.update(f"F {rel}\0{one}\n".encode())
    return sha.hexdigest()


def _environment_tree(folder: Path) -> str:
    sha = hashlib.sha256()
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if d not in _ENV_SKIP_DIRS and not d.endswith(".egg-info"))
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")):
                continue
            full = Path(root, name)
            sha.update(full.relative_to(folder).as_posix().encode() + b"\0")
            if full.is_symlink():
                sha.update(b"link:" + os.readlink(full).encode())
            else:
                _file(full, sha)
            sha.update(b"\0")
    return sha.hexdigest()
