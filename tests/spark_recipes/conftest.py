"""Fixtures of the PySpark-recipe suite: one data source jar for the whole session
($MLRUNTIME_SPARK_JARS, so no test compiles it twice); an in-process SparkSession with the data
source for its own tests. The helpers (test recipes zipped on demand, a subprocess's environment)
live in spark_recipe_helpers.py. Every test here is marked `spark` (select with -m spark)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from spark_recipe_helpers import HERE


def pytest_configure(config):
    config.addinivalue_line("markers", "spark: needs a real local Spark (pyspark and Java)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.spark)


@pytest.fixture(scope="session")
def jars_dir(tmp_path_factory):
    """Where the data source's jar is compiled once for the session (and what subprocesses use)."""
    folder = tmp_path_factory.mktemp("spark-jars")
    previous = os.environ.get("MLRUNTIME_SPARK_JARS")
    os.environ["MLRUNTIME_SPARK_JARS"] = str(folder)
    from runtime.spark.datasource import ensure_jar

    ensure_jar(folder)
    yield folder
    if previous is None:
        os.environ.pop("MLRUNTIME_SPARK_JARS", None)
    else:
        os.environ["MLRUNTIME_SPARK_JARS"] = previous


@pytest.fixture(scope="session")
def spark(jars_dir):
    """A local[1] session with the data source on its classpath (the data source's own tests)."""
    from pyspark.sql import SparkSession

    from runtime.spark.datasource import ensure_jar, jar_conf

    builder = (SparkSession.builder.master("local[1]").appName("spark-recipes-tests")
               .config("spark.driver.memory", "768m").config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.driver.host", "127.0.0.1").config("spark.driver.bindAddress", "127.0.0.1"))
    for key, value in jar_conf({}, ensure_jar(jars_dir)).items():
        builder = builder.config(key, value)
    _fresh_jvm()
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _fresh_jvm() -> None:
    """Stop a JVM that an earlier test of this process started (tests/spark builds sessions in
    process): py4j resolves `_jvm.com.adobe...` with the classpath the JVM was launched with, so
    the data source jar must be there from the launch, not added to a running JVM."""
    from pyspark import SparkContext

    if SparkContext._active_spark_context is not None:
        SparkContext._active_spark_context.stop()
    gateway = SparkContext._gateway
    if gateway is None:
        return
    proc = getattr(gateway, "proc", None)
    gateway.shutdown()
    if proc is not None:
        proc.kill()
        proc.wait()
    SparkContext._gateway = None
    SparkContext._jvm = None
