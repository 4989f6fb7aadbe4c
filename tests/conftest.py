"""Shared fixtures: a fresh runtime home and registry per test; one uv cache and one Spark data
source jar for the whole session. And where each test runs under pytest-xdist (the README's
`-n 2 --dist loadgroup`): tests that share something started once per process stay in one
worker, so it is still started once."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# Folders whose tests share one costly thing per process (a session fixture of their conftest):
# one xdist group each. Spark's two folders share one JVM (tests/spark_recipes reuses the
# SparkSession of tests/spark, see jars_dir), so they are one group; a test elsewhere marked
# `spark` or `ray` joins the group that starts what it needs.
SHARED_BY_FOLDER = {
    "spark": "spark", "spark_recipes": "spark",   # the JVM, the data source jar, warm workers
    "ray": "ray",                                 # the Ray head on free ports
    "envs": "envs",                               # the recipe environments built once
    "api": "api",                                 # the session's live server
    "lanes": "lanes",                             # the token server
}


def _xdist_group(item: pytest.Item) -> str | None:
    """The group of a test that must share a worker with others, or None (it goes anywhere)."""
    for marker in ("spark", "ray"):
        if item.get_closest_marker(marker) is not None:
            return marker
    relative = Path(str(item.path)).resolve().relative_to(REPO / "tests")
    if len(relative.parts) > 1 and relative.parts[0] in SHARED_BY_FOLDER:
        return SHARED_BY_FOLDER[relative.parts[0]]
    # A module-scoped fixture (a server, a browser, trained models): the module's tests together.
    defs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    if any(fixture_defs and fixture_defs[-1].scope == "module" for fixture_defs in defs.values()):
        return relative.as_posix()
    return None


@pytest.hookimpl(tryfirst=True)   # before xdist reads the markers (--dist loadgroup)
def pytest_collection_modifyitems(config, items):
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        group = _xdist_group(item)
        if group is not None and item.get_closest_marker("xdist_group") is None:
            item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture
def home(tmp_path):
    from runtime.home import resolve_home

    return resolve_home(tmp_path / "home")


@pytest.fixture
def registry(home):
    from runtime.service import Registry

    reg = Registry.open(home)
    yield reg
    reg.close()


@pytest.fixture
def caller():
    from runtime.service import Caller

    return Caller.local(org="TestOrg@AdobeOrg", sandbox="test", user_id="tester@example.com")


@pytest.fixture(scope="session", autouse=True)
def shared_uv_cache(tmp_path_factory):
    """One uv cache for every runtime home the suite makes (tests and the CLI processes they
    start inherit it), so a recipe environment's packages are downloaded once per run."""
    import os

    if os.environ.get("MLRUNTIME_UV_CACHE_DIR"):
        yield
        return
    os.environ["MLRUNTIME_UV_CACHE_DIR"] = str(tmp_path_factory.mktemp("uv-cache"))
    yield
    os.environ.pop("MLRUNTIME_UV_CACHE_DIR", None)


@pytest.fixture(scope="session")
def jars_dir(tmp_path_factory):
    """Where the Spark data source's jar is compiled once for the session ($MLRUNTIME_SPARK_JARS,
    what subprocesses use too): tests/spark's in-process JVM and tests/spark_recipes' share it,
    so the second can reuse the first's JVM (py4j sees only the classes of the launch classpath)."""
    import os

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
