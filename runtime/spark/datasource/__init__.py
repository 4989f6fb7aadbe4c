"""The platform's Spark data source, `com.adobe.platform.query`, over local data sets.

A small JVM class (Java sources next to this file) compiled with the JDK's `javac` on first use
and cached as a jar under `<runtime home>/cache/spark/` (or $MLRUNTIME_SPARK_JARS), keyed by the
sources' digest and the Spark version. Spark workers put it on the driver's classpath
(`spark.jars`), so recipes reach `QSOption` through py4j. Reads hand Spark its own Parquet/CSV/JSON
file relation (native scans); the catalog reaches the JVM as `spark.mlruntime.dataset.<id>` settings.
"""
from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping

from ...errors import ConfigError

__all__ = ["CONF_PREFIX", "FORMAT", "SANDBOX_CONF", "DatasourceUnavailable", "clear_catalog",
           "ensure_jar", "jar_conf", "publish_catalog"]

FORMAT = "com.adobe.platform.query"
CONF_PREFIX = "spark.mlruntime.dataset."
SANDBOX_CONF = "spark.mlruntime.sandboxName"
ENV_JARS = "MLRUNTIME_SPARK_JARS"
SOURCES = Path(__file__).resolve().parent / "java"
JAR_PREFIX = "mlruntime-platform-query-"

log = logging.getLogger("runtime.spark.datasource")


class DatasourceUnavailable(ConfigError):
    title = "Spark data source unavailable"


def _sources() -> list[Path]:
    return sorted(SOURCES.rglob("*.java"))


def _spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def jar_dir() -> Path:
    if os.environ.get(ENV_JARS):
        return Path(os.environ[ENV_JARS]).expanduser()
    from ...home import resolve_home

    return resolve_home().root / "cache" / "spark"


def jar_name() -> str:
    import pyspark

    digest = hashlib.sha256()
    for source in _sources():
        digest.update(source.relative_to(SOURCES).as_posix().encode() + b"\0" + source.read_bytes())
    digest.update(pyspark.__version__.encode())
    return f"{JAR_PREFIX}{digest.hexdigest()[:16]}.jar"


def ensure_jar(directory: Path | None = None) -> Path:
    """The data source's jar, compiled now when this version is not cached yet (a few seconds,
    once). Two processes compiling at once take turns (a lock file); the jar appears atomically."""
    directory = Path(directory) if directory is not None else jar_dir()
    target = directory / jar_name()
    if target.is_file():
        return target
    javac, jar_tool = shutil.which("javac"), shutil.which("jar")
    if javac is None or jar_tool is None:
        raise DatasourceUnavailable(
            "The platform data source com.adobe.platform.query is compiled on first use and needs a "
            "JDK (javac and jar, 17 or later) on PATH; install one, e.g. apt-get install openjdk-17-jdk-headless")
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".compile.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file():
            return target
        with tempfile.TemporaryDirectory(prefix="mlruntime-qs-", dir=directory) as work:
            classes = Path(work) / "classes"
            classes.mkdir()
            classpath = str(_spark_home() / "jars" / "*")
            compiled = subprocess.run(
                [javac, "--release", "17", "-nowarn", "-cp", classpath, "-d", str(classes),
                 *map(str, _sources())], capture_output=True, text=True)
            if compiled.returncode != 0:
                raise DatasourceUnavailable(
                    f"Compiling the data source com.adobe.platform.query failed:\n{compiled.stderr[-3000:]}")
            staged = Path(work) / target.name
            packed = subprocess.run([jar_tool, "cf", str(staged), "-C", str(classes), "."],
                                    capture_output=True, text=True)
            if packed.returncode != 0:
                raise DatasourceUnavailable(f"Packing the data source's jar failed: {packed.stderr[-2000:]}")
            os.replace(staged, target)
        log.info("compiled the Spark data source %s into %s", FORMAT, target)
    return target


def jar_conf(conf: Mapping[str, str], jar: Path) -> dict[str, str]:
    """`conf` with `jar` on the driver's classpath and shipped to executors (`spark.jars`)."""
    out = dict(conf)
    jars = [j for j in out.get("spark.jars", "").split(",") if j]
    if str(jar) not in jars:
        jars.append(str(jar))
    out["spark.jars"] = ",".join(jars)
    extra = [p for p in out.get("spark.driver.extraClassPath", "").split(os.pathsep) if p]
    if str(jar) not in extra:
        extra.append(str(jar))
    out["spark.driver.extraClassPath"] = os.pathsep.join(extra)
    return out


def _entry_value(entry: Any) -> str:
    """`<format>\\t<uri>` of a catalog entry (an object with `uri`/`path` and `format`, a mapping,
    or a plain path)."""
    if isinstance(entry, (str, os.PathLike)):
        return f"\t{Path(entry).absolute()}"
    get = entry.get if isinstance(entry, Mapping) else (lambda k, d=None: getattr(entry, k, d))
    path = get("path") or get("uri")
    if path is None:
        raise ConfigError(f"Catalog entry {entry!r} names no path or uri")
    text = str(path)
    if "://" not in text:
        text = str(Path(text).absolute())
    return f"{get('format') or ''}\t{text}"


def publish_catalog(spark: Any, catalog: Mapping[str, Any], *, sandbox: str | None = None) -> list[str]:
    """Make `catalog` (id -> entry) what `com.adobe.platform.query` resolves ids with, for this
    run: set on the run's session and on the context (a recipe may use either). Returns the keys
    set, for `clear_catalog`."""
    keys = []
    conf = spark.sparkContext._conf
    for dataset_id, entry in catalog.items():
        key, value = CONF_PREFIX + str(dataset_id), _entry_value(entry)
        conf.set(key, value)
        spark.conf.set(key, value)
        keys.append(key)
    if sandbox:
        conf.set(SANDBOX_CONF, sandbox)
        spark.conf.set(SANDBOX_CONF, sandbox)
        keys.append(SANDBOX_CONF)
    return keys


def clear_catalog(spark: Any, keys: Iterable[str] | None = None) -> None:
    """Remove what `publish_catalog` set (every data set setting when `keys` is None)."""
    jconf = spark.sparkContext._conf._jconf
    if keys is None:
        keys = [k for k, _ in spark.sparkContext._conf.getAll()
                if k.startswith(CONF_PREFIX) or k == SANDBOX_CONF]
    for key in keys:
        jconf.remove(key)
        try:
            spark.conf.unset(key)
        except Exception:  # a session already stopped: nothing to clear there
            pass
