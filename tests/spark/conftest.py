"""Fixtures of the Spark suite: one warm-worker pool for the whole session (so tests share JVMs),
small synthetic retail data. Every test here is marked `spark` (select with -m spark)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
BACKENDS = HERE.parent / "backends"
for folder in (HERE, BACKENDS):  # spark_engines, backend_conformance, failing_engines
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))


def pytest_configure(config):
    config.addinivalue_line("markers", "spark: needs a real local Spark (pyspark and Java)")


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.spark)


@pytest.fixture(scope="session")
def spark_pool():
    from runtime.spark.pool import SparkWorkerPool

    pool = SparkWorkerPool(idle_timeout_s=600)
    yield pool
    pool.close()


@pytest.fixture(scope="session")
def retail_small(tmp_path_factory):
    """Three stores, the sample's 143 weeks (so the 2012 validation split exists)."""
    from engines.retail_sales import write_retail_dataset

    return write_retail_dataset(tmp_path_factory.mktemp("retail-spark"), seed=5, stores=3)
