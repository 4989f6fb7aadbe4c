"""Where the recipe environments live, and the files that say what state each one is in.

HOME/envs/<key>/ is one environment (complete once its META_FILE exists), HOME/envs/.locks/ one
file lock per key, HOME/envs/.tmp/ the staging folders of builds, HOME/envs/.resolved/ the
remembered resolutions; uv's cache is HOME/cache/uv. The builder (`build.py`) and the cache's
list/remove/prune (`cache.py`) both read the layout from here.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ..errors import EnvBuildError

LAYOUT_VERSION = 1                       # of the folder layout below; part of every key
META_FILE = "mlruntime-env.json"         # written last before the rename: its presence = complete
LOCK_FILE = "requirements.lock"
IN_FILE = "requirements.in"
FREEZE_FILE = "pip-freeze.txt"
BUILD_LOG = "build.log"
LAST_USED = "last-used"
PTH_FILE = "mlruntime.pth"
RUNTIME_LINK_DIR = "runtime-src"         # <env>/runtime-src/runtime -> the runtime package
ENV_UV_CACHE_DIR = "MLRUNTIME_UV_CACHE_DIR"


# --- folders ----------------------------------------------------------------------------------

def home_root(home) -> Path:
    """A runtime home: a path, or a `runtime.home.Home` (its `root`)."""
    if not isinstance(home, (str, os.PathLike)):
        home = home.root
    return Path(home).expanduser().resolve()


def envs_dir(home) -> Path:
    return home_root(home) / "envs"


def uv_cache_dir(home) -> Path:
    """HOME/cache/uv, or one cache shared by several homes (MLRUNTIME_UV_CACHE_DIR): keep it on
    the homes' file system, or packages are copied instead of hard-linked."""
    shared = os.environ.get(ENV_UV_CACHE_DIR)
    return Path(shared).expanduser() if shared else home_root(home) / "cache" / "uv"


def runtime_source_root() -> Path:
    """The folder holding the `runtime` package this process runs."""
    return Path(__file__).resolve().parents[2]


def runtime_package() -> Path:
    """The `runtime` package this process runs (every environment links it)."""
    return Path(__file__).resolve().parents[1]


def compat_dir() -> Path:
    """runtime/compat: the platform's libraries (platform_sdk, ml, sdk), for recipe envs only."""
    return runtime_package() / "compat"


def env_python(env: Path) -> Path:
    return env / "bin" / "python"


# --- one environment's files ------------------------------------------------------------------

def is_ready(path: Path) -> bool:
    return (path / META_FILE).is_file() and env_python(path).exists()


def read_meta(path: Path) -> dict:
    try:
        return json.loads((path / META_FILE).read_text())
    except (OSError, ValueError):
        return {}


def touch(path: Path) -> None:
    try:
        path.touch()
        os.utime(path)
    except OSError:
        pass


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:6]}")
    tmp.write_text(text)
    os.replace(tmp, path)


def size_mb(folder: Path) -> float:
    """What a folder's files take on disk (hard links into uv's cache counted once)."""
    seen, total = set(), 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total / 2**20


# --- staging and locks ------------------------------------------------------------------------

def remove_stale(root: Path, key: str) -> None:
    """Staging folders of earlier builds of this key that died (we hold its lock)."""
    tmp_root = root / ".tmp"
    if tmp_root.is_dir():
        for entry in tmp_root.glob(f"{key}-*"):
            shutil.rmtree(entry, ignore_errors=True)


@contextmanager
def key_lock(root: Path, key: str, timeout_s: float, say) -> Iterator[None]:
    """Hold the key's file lock: one build of a key at a time, the others wait for it."""
    locks = root / ".locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{key}.lock", "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"another process is building environment {key}: waiting for it")
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise EnvBuildError(f"waited {timeout_s:g} s for another build of "
                                            f"environment {key}", build_log="") from None
                    time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def key_locked(root: Path, key: str) -> bool:
    """True when some process holds the key's lock (building it) right now."""
    path = root / ".locks" / f"{key}.lock"
    if not path.exists():
        return False
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fh, fcntl.LOCK_UN)
        return False
