"""Test modules that run on both registry stores: `pytestmark = pytest.mark.stores` makes each of
their tests run twice, `[sqlite]` and `[postgresql]`, through the `home` fixture (and everything
built on it: `registry`, CLI processes, `run serve` processes given `store_env(home)`).

The PostgreSQL variant has one database per module (tests/pg_cluster.py's server), emptied before
each test (a fresh registry, as a fresh SQLite home is); MLRUNTIME_STORE and
MLRUNTIME_DB name it, so the registries and processes a test opens from the home use it too.
"""
from __future__ import annotations

import atexit
import itertools
import os
import re
from typing import Optional

STORES = ("sqlite", "postgresql")
ENV_NAMES = ("MLRUNTIME_STORE", "MLRUNTIME_DB")
_databases = itertools.count(1)


def parametrize(metafunc) -> None:
    """pytest_generate_tests: the `stores` marker runs a module's tests on both stores."""
    if "store_kind" in metafunc.fixturenames and metafunc.definition.get_closest_marker("stores"):
        metafunc.parametrize("store_kind", STORES, indirect=True, scope="module")


def database_name(module_name: str) -> str:
    stem = re.sub(r"[^a-z0-9_]", "_", module_name.lower())[-40:]
    return f"t{os.getpid()}_{next(_databases)}_{stem}"


def module_database(request, kind: str) -> Optional[str]:
    """The module's PostgreSQL URL for the postgresql variant, None for SQLite."""
    if kind != "postgresql":
        return None
    pg_server = request.getfixturevalue("pg_server")
    return pg_server.create_database(database_name(request.module.__name__))


_open: dict = {}


def empty(url: str) -> None:
    from runtime.store import open_store
    from runtime.store.postgres import empty_registry

    if url not in _open:
        _open[url] = open_store(url)
        atexit.register(_open[url].close)
    empty_registry(_open[url])


def store_env(url: Optional[str]) -> dict[str, str]:
    """The variables that point a process (a `run serve`, a CLI) at the store; {} for SQLite."""
    return {name: url for name in ENV_NAMES} if url else {}
