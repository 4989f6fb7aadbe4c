"""SparkSessions built from a SparkConfig, and the configuration a live session really has.

The JVM reads `spark.driver.memory` once, when it starts: `build_session` therefore refuses to hand
out a live session whose JVM was started with another driver memory or master, instead of
silently reusing it (getOrCreate would).
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, MissingDependency
from .config import SparkConfig, parse_memory_mb

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

__all__ = ["build_session", "effective_config", "require_pyspark"]

APP_NAME = "mlinstance-runtime"


def require_pyspark() -> Any:
    """The pyspark module, or MissingDependency with the install command."""
    try:
        import pyspark
    except ImportError as exc:
        raise MissingDependency("pyspark", "spark") from exc
    return pyspark


def build_session(config: SparkConfig, *, app_name: str = APP_NAME) -> SparkSession:
    """A session with exactly `config`: a new JVM when none runs in this process, the live one
    when it was started with the same master and driver memory, a ConfigError otherwise."""
    require_pyspark()
    from pyspark import SparkContext
    from pyspark.sql import SparkSession

    live = SparkContext._active_spark_context
    if live is not None:
        conf = live.getConf()
        live_memory = parse_memory_mb(conf.get("spark.driver.memory", "1g"))
        if live_memory != config.driver_memory_mb or live.master != config.master:
            raise ConfigError(
                f"This process's Spark JVM runs {live.master} with {live_memory} MB of driver "
                f"memory; the run asks for {config.master} with {config.driver_memory_mb} MB. "
                "Driver memory is fixed when a JVM starts: run it in a new process (the pyspark "
                "backend's pool starts one per resource shape)")
        # Same JVM shape: the session gets this run's SQL settings, the context is shared.
        session = SparkSession.builder.getOrCreate().newSession()
        for key, value in config.conf.items():
            if key.startswith("spark.sql.") and not _static_sql_conf(key):
                session.conf.set(key, value)
        return session
    builder = SparkSession.builder.master(config.master).appName(app_name)
    for key, value in config.conf.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def _static_sql_conf(key: str) -> bool:
    return key.startswith(("spark.sql.warehouse.", "spark.sql.catalogImplementation",
                           "spark.sql.extensions", "spark.sql.session.", "spark.sql.legacy."))


def effective_config(spark: SparkSession) -> dict[str, Any]:
    """What the live session runs with, read back from Spark itself (not from the request)."""
    sc = spark.sparkContext
    conf = sc.getConf()

    def get(key: str) -> str | None:
        return conf.get(key, None)

    def number(key: str) -> int | None:
        value = get(key)
        return int(value) if value is not None and value.isdigit() else None

    try:
        jvm_pid = int(sc._jvm.java.lang.ProcessHandle.current().pid())
    except Exception:  # py4j on a remote gateway: the pid is not ours to know
        jvm_pid = None
    memory = get("spark.executor.memory")
    return {
        "master": sc.master,
        "applicationId": sc.applicationId,
        "sparkVersion": spark.version,
        "driverMemory": f"{parse_memory_mb(get('spark.driver.memory') or '1g')}m",
        "driverCores": number("spark.driver.cores"),
        "executorMemory": f"{parse_memory_mb(memory)}m" if memory else None,
        "executorCores": number("spark.executor.cores"),
        "numExecutors": number("spark.executor.instances"),
        "defaultParallelism": sc.defaultParallelism,
        "uiEnabled": (get("spark.ui.enabled") or "true") == "true",
        "arrowEnabled": (get("spark.sql.execution.arrow.pyspark.enabled") or "false") == "true",
        "jvmPid": jvm_pid,
    }


def timed_session(config: SparkConfig) -> tuple[SparkSession, float]:
    start = time.perf_counter()
    session = build_session(config)
    return session, time.perf_counter() - start
