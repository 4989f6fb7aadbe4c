"""Shared fixtures: a fresh runtime home and registry per test; one uv cache and one Spark data
source jar for the whole session. Under pytest-xdist (the README's `-n 3 --dist loadfile`) each
worker process has its own: a session fixture starts once per worker, a module's tests share one.
(`--dist loadgroup` with xdist_group marks would keep a folder's session fixture in one worker,
but xdist 3.8 cannot tag pytest 9.2's node ids: the groups are silently ignored.)"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


# Test files of minutes each (JVMs, Ray heads, the README's blocks), longest first as measured
# (`--durations`, 2 cores, 3 workers): collected in this order, so that the xdist workers
# (`--dist loadfile`) start them early and fill in with short files, instead of one worker taking
# a long file last while the others sit idle. A prefix ranks every file under it.
LONG_FIRST = ("tests/test_readme_spark.py", "tests/spark/test_spark_runs.py", "tests/test_readme.py",
              "tests/ray/test_recipe_jobs.py", "tests/spark_recipes/test_pyspark_recipe_runs.py",
              "tests/spark/test_spark_backend.py", "tests/spark_recipes/test_cluster_env.py",
              "tests/spark_recipes/test_datasource.py", "tests/api/test_fuzz_contract.py",
              "tests/recipes/test_recipe_runs.py", "tests/warm/test_warm_server.py",
              "tests/supervision/test_server_runs.py", "tests/spark/", "tests/spark_recipes/",
              "tests/ray/", "tests/r_recipes/", "tests/sweep/", "tests/services/test_live_schedules.py",
              "tests/supervision/test_hosts.py")


def pytest_collection_modifyitems(config, items):
    """Long files first (LONG_FIRST). A clone without `../shared` (the reference contract and
    the retail data) skips the tests that read those files, each naming what it needs and where
    (tests/shared_files.py finds them from the source); every other test runs."""
    import shared_files

    def long_first(item) -> int:
        path = Path(str(item.fspath)).resolve().relative_to(REPO).as_posix()
        return next((rank for rank, prefix in enumerate(LONG_FIRST) if path.startswith(prefix)),
                    len(LONG_FIRST))

    items.sort(key=long_first)   # stable: the order within each group is kept
    if shared_files.present():
        return
    for item in items:
        files = shared_files.needs_shared(item)
        if files:
            item.add_marker(pytest.mark.skip(reason=shared_files.skip_reason(files)))


def _compile_sources() -> None:
    """Bytecode for the runtime's and the engines' modules before any test starts a process. With
    PYTHONDONTWRITEBYTECODE set (as on this project's CI machine) nothing writes it, and every
    `run`, worker and server the suite starts would compile the same modules from source again
    (60 ms of CPU for the CLI's and the worker's, each time). An up-to-date
    file is only looked at; an edited one is compiled anew (its source's mtime and size)."""
    import compileall

    for folder in ("runtime", "engines"):
        compileall.compile_dir(str(REPO / folder), quiet=1)


def pytest_configure(config):
    if not hasattr(config, "workerinput"):   # the controller (or a run without xdist), once
        _compile_sources()
    # Spark's own defaults file for every JVM the suite starts (drivers, local-cluster executors):
    # tests/spark_conf/spark-defaults.conf compiles their Java with the quick first-tier compiler
    # alone. A test's JVM lives seconds, on data of a few thousand rows, where the optimising
    # compiler's work never pays back: half the CPU of a Spark run (41 -> 22 s user for a
    # retail-sales-spark train on local[2], 80 -> 40 s on local-cluster[2,1,1024]). What runs is
    # the same; users' runs keep Spark's defaults. A SPARK_CONF_DIR of the developer's is kept.
    os.environ.setdefault("SPARK_CONF_DIR", str(REPO / "tests" / "spark_conf"))
    # xdist (3.6+) hands out files by their number of tests unless told not to, which sent the
    # long files above, of a few tests each, last: keep the collection order.
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False
    config.addinivalue_line("markers", "stores: run the module's tests on the SQLite and the "
                                       "PostgreSQL store (tests/store_params.py)")


def pytest_generate_tests(metafunc):
    import store_params

    store_params.parametrize(metafunc)


@pytest.fixture(scope="module")
def store_kind(request):
    """'sqlite', or each of 'sqlite' and 'postgresql' in a module marked `stores`."""
    return getattr(request, "param", "sqlite")


@pytest.fixture(scope="module")
def store_db(request, store_kind):
    """The module's PostgreSQL database URL in the postgresql variant, else None."""
    import store_params

    return store_params.module_database(request, store_kind)


@pytest.fixture
def home(tmp_path, store_db, monkeypatch):
    """A fresh runtime home; in the postgresql variant, its registry is the module's database,
    emptied, and named by the environment for the processes the test starts."""
    from runtime.home import resolve_home

    if store_db:
        import store_params

        store_params.empty(store_db)
        for name, value in store_params.store_env(store_db).items():
            monkeypatch.setenv(name, value)
    return resolve_home(tmp_path / "home")


@pytest.fixture
def registry(home):
    from runtime.registry import Registry

    reg = Registry.open(home)
    yield reg
    reg.close()


@pytest.fixture(scope="session")
def pg_server():
    """A throwaway PostgreSQL server for this worker (tests/pg_cluster.py); the tests that ask
    for it skip, saying why, where no server can be started."""
    import pg_cluster

    why = pg_cluster.missing()
    if why:
        pytest.skip(f"needs a PostgreSQL server: {why}")
    cluster = pg_cluster.PgCluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def caller():
    from runtime.registry import Caller

    return Caller.local(org="TestOrg@AdobeOrg", sandbox="test", user_id="tester@example.com")


def _suite_uv_cache(tmp_path_factory) -> Path:
    base = tmp_path_factory.getbasetemp()   # .../pytest-of-USER/pytest-N[/popen-gwK]
    owner = next((p for p in base.parents if p.name.startswith("pytest-of-")), base.parent)
    return owner / "mlruntime-uv-cache"


def pytest_sessionfinish(session):
    """The controller prunes the suite's uv cache once every worker is done: uv keeps a new
    revision of a source distribution whenever the index makes it download the file again (this
    machine's mirror does, for pyspark's 450 MB sdist that a PySpark recipe's environment pins:
    1.3 GB unpacked each time), and a cache kept between runs grew by gigabytes a run until the
    disk was full. `uv cache prune` removes what nothing refers to; environments built from it
    keep their hard links. A cache the developer chose (MLRUNTIME_UV_CACHE_DIR) is left alone."""
    factory = getattr(session.config, "_tmp_path_factory", None)
    if hasattr(session.config, "workerinput") or factory is None \
            or os.environ.get("MLRUNTIME_UV_CACHE_DIR"):
        return
    from runtime.envs.build import uv_cache_prune

    uv_cache_prune(_suite_uv_cache(factory))


@pytest.fixture(scope="session", autouse=True)
def shared_uv_cache(tmp_path_factory):
    """One uv cache for every runtime home the suite makes (tests and the CLI processes they
    start inherit it), shared by the xdist workers and kept between runs on one machine (beside
    pytest's own temporary folders, so environments hardlink from it): a recipe environment's
    packages are downloaded once per machine, not once per worker and run. uv locks its cache for
    concurrent users; set MLRUNTIME_UV_CACHE_DIR to choose another."""
    if os.environ.get("MLRUNTIME_UV_CACHE_DIR"):
        yield
        return
    cache = _suite_uv_cache(tmp_path_factory)
    cache.mkdir(parents=True, exist_ok=True)
    os.environ["MLRUNTIME_UV_CACHE_DIR"] = str(cache)
    yield
    os.environ.pop("MLRUNTIME_UV_CACHE_DIR", None)


@pytest.fixture(scope="session")
def jars_dir(tmp_path_factory):
    """Where the Spark data source's jar is compiled once for the session ($MLRUNTIME_SPARK_JARS,
    what subprocesses use too): tests/spark's in-process JVM and tests/spark_recipes' share it,
    so the second can reuse the first's JVM (py4j sees only the classes of the launch classpath)."""
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
