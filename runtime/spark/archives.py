"""A PySpark recipe's environment as a Spark cluster's executors get it: a packed virtual
environment (venv-pack) shipped with `spark.archives` and run as `./environment/bin/python`.

Only what the cluster's Python lacks travels: the pins of the recipe's local environment (its
requirements.lock) that this interpreter does not have at the same version, less pyspark and py4j
(the cluster's own, the same Spark the driver talks to). Behind them (one .pth) come the runtime's
compat (our sdk, platform_sdk, ml.runtime, before site-packages as in a local recipe environment)
and the cluster's site-packages (pandas, numpy, pyarrow, the runtime itself). The cluster's Python
is the one the pool gives executors by default: this interpreter, at the same path on every node
(as Spark's own venv-pack recipe assumes: the packed `bin/python` links to its base Python).

An archive is built once per pins (and Python) and cached under the runtime home
(HOME/cache/spark-envs): the runtime's code is the cluster's, so editing it packs nothing anew.
Requirements the cluster already satisfies ship nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import site
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from ..errors import EnvBuildError

__all__ = ["ARCHIVE_NAME", "EXECUTOR_PYTHON", "PackedEnvironment", "executor_environment",
           "missing_pins", "ships_to_executors"]

ARCHIVE_NAME = "environment"                       # the folder each executor unpacks it into
EXECUTOR_PYTHON = f"./{ARCHIVE_NAME}/bin/python"   # relative to the executor's working folder
FROM_CLUSTER = ("pyspark", "py4j")                 # never packed: the cluster's Spark
ARCHIVES_DIR = ("cache", "spark-envs")
LAYOUT_VERSION = 1
BUILD_TIMEOUT_S = 900.0
_PTH = "mlruntime-cluster.pth"


@dataclass(frozen=True)
class PackedEnvironment:
    """What the executors of one recipe run get: `archive` (None: the cluster's Python has every
    pin, nothing ships), the pins packed in it, and whether this call built it."""

    archive: Optional[Path]
    pins: tuple[str, ...]
    built: bool = False
    seconds: float = 0.0

    def conf(self) -> dict[str, str]:
        return {"spark.archives": f"{self.archive}#{ARCHIVE_NAME}"} if self.archive else {}

    def describe(self) -> str:
        if self.archive is None:
            return ("[spark] executors: the cluster's Python has every requirement of the "
                    "recipe's environment: no environment ships")
        how = f"built in {self.seconds:.1f} s" if self.built else "cached"
        return (f"[spark] executors: packed environment {self.archive.name} ({how}; "
                f"{len(self.pins)} pins the cluster's Python lacks: {', '.join(self.pins)}) "
                f"shipped with spark.archives, run as {EXECUTOR_PYTHON}")


def ships_to_executors(master: str) -> bool:
    """Whether executors run apart from the driver, in working folders of their own (a Spark
    cluster, `local-cluster[...]` included): a path of this machine's is no interpreter there."""
    return not (master == "local" or master.startswith("local["))


def _canonical(name: str) -> str:
    return name.strip().lower().replace("_", "-").replace(".", "-")


def _lock_pins(env: Path) -> list[str]:
    """The lines of an environment's requirements.lock (`name==version`, or `name @ URL`: packed
    from here, so a local file is fine); the recipe's own line is left out (its package ships as
    on any master)."""
    from ..envs.layout import LOCK_FILE, read_meta

    try:
        lines = (env / LOCK_FILE).read_text().splitlines()
    except OSError as exc:
        raise EnvBuildError(f"The recipe's environment {env} has no readable {LOCK_FILE} ({exc}): "
                            "rebuild it with run envs build --refresh", step="pack") from exc
    own = _canonical(read_meta(env).get("recipe_name") or "")
    pins = []
    for line in (line.strip() for line in lines):
        if not line or line.startswith(("#", "-")):
            continue
        line = line.split(" #", 1)[0].strip()
        name = line.split(" @ ", 1)[0] if " @ " in line else line.partition("==")[0]
        if own and _canonical(name) == own:
            continue
        pins.append(line.split(";", 1)[0].strip())
    return pins


def missing_pins(pins: list[str]) -> list[str]:
    """The pins this interpreter (the cluster's Python) does not have at the same version,
    pyspark and py4j left out."""
    from importlib.metadata import PackageNotFoundError, version

    out = []
    for pin in pins:
        name, sep, wanted = pin.partition("==")
        if _canonical(name) in FROM_CLUSTER:
            continue
        try:
            if sep and version(name.strip()) == wanted.strip():
                continue
        except PackageNotFoundError:
            pass
        out.append(pin)
    return sorted(out, key=str.lower)


def _behind() -> list[str]:
    """What the packed environment's .pth puts behind its own packages: compat, then the
    cluster's site-packages (with their own .pth files)."""
    from ..envs.layout import compat_dir

    return [str(compat_dir()), *(p for p in site.getsitepackages() if Path(p).is_dir())]


def executor_environment(python: Path, *, home: Optional[Path] = None,
                         say: Callable[[str], None] = lambda _: None) -> PackedEnvironment:
    """The packed environment for the executors of a recipe whose local environment's interpreter
    is `python`: built once per pins and cached under the runtime home (`home`, default: the home
    whose envs/ holds that environment)."""
    from ..envs.layout import home_root

    env = Path(python).parent.parent
    pins = missing_pins(_lock_pins(env))
    if not pins:
        return PackedEnvironment(None, ())
    root = (home_root(home) if home is not None else env.parent.parent).joinpath(*ARCHIVES_DIR)
    key = hashlib.sha256(json.dumps({
        "layout": LAYOUT_VERSION, "pins": pins, "python": sys.version,
        "base": sys._base_executable, "behind": _behind()}, sort_keys=True).encode()).hexdigest()[:16]
    archive = root / f"env-{key}.tar.gz"
    if archive.is_file():
        return PackedEnvironment(archive, tuple(pins))
    from ..envs.layout import key_lock

    root.mkdir(parents=True, exist_ok=True)
    with key_lock(root, key, BUILD_TIMEOUT_S, say):
        if archive.is_file():   # another process packed it while we waited
            return PackedEnvironment(archive, tuple(pins))
        started = time.monotonic()
        say(f"[spark] packing an environment for the executors: {', '.join(pins)}")
        staging = root / ".tmp" / f"{key}-{uuid.uuid4().hex[:8]}"
        staging.mkdir(parents=True)
        try:
            _pack(staging, pins, env, archive)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return PackedEnvironment(archive, tuple(pins), built=True,
                             seconds=time.monotonic() - started)


def _run(command: list[str], step: str, **kwargs) -> None:
    proc = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
                          **kwargs)
    if proc.returncode != 0:
        raise EnvBuildError(f"Packing the executors' environment failed at {step} (exit "
                            f"{proc.returncode}): {proc.stderr.strip()[-1000:]}",
                            build_log=proc.stdout + proc.stderr, step="pack")


def _pack(staging: Path, pins: list[str], env: Path, archive: Path) -> None:
    """A venv over this interpreter's base Python with `pins` (no dependencies: the lock is a
    whole resolution), compat and the cluster's site-packages behind them; packed."""
    try:
        import venv_pack
    except ImportError as exc:
        from ..errors import MissingDependency

        raise MissingDependency("venv-pack", "spark") from exc
    from ..envs import find_uv
    from ..envs.layout import uv_cache_dir

    venv = staging / ARCHIVE_NAME
    _run([sys._base_executable, "-m", "venv", "--without-pip", str(venv)], "venv")
    packed_python = venv / "bin" / "python"
    uv = find_uv()
    if uv is not None:
        _run([uv, "pip", "install", "--python", str(packed_python), "--no-deps", *pins],
             "uv pip install",
             env={**os.environ, "UV_CACHE_DIR": str(uv_cache_dir(env.parent.parent)),
                  "UV_PYTHON_DOWNLOADS": "never"})
    else:
        _run([sys.executable, "-m", "pip", "install", "--no-deps", "--python", str(packed_python),
              *pins], "pip install")
    sites = subprocess.run([str(packed_python), "-c", "import site; print(site.getsitepackages()[0])"],
                           capture_output=True, text=True, check=True).stdout.strip()
    compat, *cluster = _behind()
    # Appended after the packed packages, which win; addsitedir, so the cluster's own .pth files
    # (its editable installs) count too (and venv-pack takes no bare path line for an editable
    # package of ours).
    (Path(sites) / _PTH).write_text("".join(
        f"import site; site.addsitedir({p!r})\n" for p in [compat, *cluster]))
    partial = staging / archive.name
    try:
        venv_pack.pack(prefix=str(venv), output=str(partial), format="tar.gz", compress_level=1)
    except venv_pack.VenvPackException as exc:
        raise EnvBuildError(f"Packing the executors' environment failed: {exc}",
                            step="pack") from exc
    os.replace(partial, archive)
