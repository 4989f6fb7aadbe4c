"""Fixtures of the PySpark-recipe suite: an in-process SparkSession with the data source for its
own tests (the data source jar, compiled once per session: `jars_dir` in tests/conftest.py). The
helpers (test recipes zipped on demand, a subprocess's environment) live in
spark_recipe_helpers.py. Every test here is marked `spark` (select with -m spark).

CLI runs here are warm (MLRUNTIME_WARM=1 in a subprocess's environment): a CLI run leaves its
Spark worker listening in its home, so the next run of that shape in that home (a score after its
train) takes it instead of starting a JVM; when a test ends, the warm workers of the homes under
its temporary folder are stopped (`_warm_workers_stopped`)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

import spark_recipe_helpers
from spark_recipe_helpers import HERE

_cold_run_env = spark_recipe_helpers.run_env


def _warm_run_env(jars: Path) -> dict[str, str]:
    """A subprocess's environment (spark_recipe_helpers.run_env), with its runs warm."""
    return {**_cold_run_env(jars), "MLRUNTIME_WARM": "1"}


# Before the test modules import it by name (conftest.py is imported first).
spark_recipe_helpers.run_env = _warm_run_env


@pytest.fixture(autouse=True)
def _warm_workers_stopped(tmp_path):
    """Stop the warm workers (both kinds) a test's CLI runs left in their homes, when it ends (a
    JVM holds a GiB): exactly the homes under the test's temporary folder, never another test's,
    session's or user's. A server's workers end with the server."""
    yield
    from runtime import pools

    root = tmp_path.resolve()
    homes = set()
    for name in pools.discover(f"{pools.PREFIX}-{os.getuid()}-"):
        conn = pools.connect(name)
        if conn is None:
            continue
        reply, _ = pools.ask(conn, {"op": "ping"}, 5.0)
        conn.close()
        home = ((reply or {}).get("pong") or {}).get("home")
        if home and Path(home).resolve().is_relative_to(root):
            homes.add(Path(home))
    for home in homes:
        pools.stop_home(home)


@pytest.fixture(scope="module")
def spark(jars_dir):
    """A local[1] session with the data source on its classpath (the data source's own tests); one
    per module, on one JVM for the process (a new session on a live JVM takes a second or two), so
    the process has no live session between modules (tests/spark's in-process test needs none)."""
    from pyspark.sql import SparkSession

    from runtime.spark.datasource import ensure_jar, jar_conf

    builder = (SparkSession.builder.master("local[1]").appName("spark-recipes-tests")
               .config("spark.driver.memory", "768m").config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1"))
    jar = ensure_jar(jars_dir)
    for key, value in jar_conf({}, jar).items():
        builder = builder.config(key, value)
    _jvm_with(jar)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _jvm_with(jar) -> None:
    """Leaves this process a JVM launched with `jar` on its classpath, or none: py4j resolves
    `_jvm.com.adobe...` with the classpath the JVM was launched with, so a JVM that an earlier test
    of this process started (tests/spark builds sessions in process) is kept only if it was
    launched with the jar (tests/spark's in-process test launches it so), else stopped."""
    from pyspark import SparkContext

    if SparkContext._active_spark_context is not None:
        SparkContext._active_spark_context.stop()
    gateway = SparkContext._gateway
    if gateway is None:
        return
    try:
        classpath = str(SparkContext._jvm.java.lang.System.getProperty("java.class.path"))
    except Exception:   # a gateway that no longer answers: replace it
        classpath = ""
    if str(jar) in classpath.split(os.pathsep):
        return
    proc = getattr(gateway, "proc", None)
    gateway.shutdown()
    if proc is not None:
        proc.kill()
        proc.wait()
    SparkContext._gateway = None
    SparkContext._jvm = None
