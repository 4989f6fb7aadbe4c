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


# A cancel retires the pool's warm worker (its JVM), so the next run of that shape starts a new
# JVM (10-20 s on a loaded 2-core box). The conformance suite's cancel runs right after
# test_cancel_stops_the_spark_job_and_retires_the_worker (whose own check needs a new JVM anyway)
# instead of in the middle of the runs that share the first JVM.
_RETIRES = "TestPySparkBackendConformance::test_cancel_aborts_and_status_follows"
_AFTER = "test_spark_backend.py::test_cancel_stops_the_spark_job_and_retires_the_worker"


def pytest_collection_modifyitems(config, items):
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.spark)
    moved = [i for i in items if i.nodeid.endswith(_RETIRES)]
    anchor = [i for i in items if i.nodeid.endswith(_AFTER)]
    if len(moved) == 1 and len(anchor) == 1:
        items.remove(moved[0])
        items.insert(items.index(anchor[0]) + 1, moved[0])


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
