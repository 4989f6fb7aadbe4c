"""The runs index and the search language on both stores: `registry` here is the embedded SQLite
one or a PostgreSQL one (a database per module, emptied before each test), so every test of this
folder checks the same answers from both."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def pg_url(pg_server, request) -> str:
    return pg_server.create_database("runs_" + request.module.__name__.rsplit(".", 1)[-1])


def empty_database(url: str) -> None:
    """Every table of the registry emptied, its schema kept (faster than a database per test)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
            "AND tablename NOT IN ('schema_version', 'storeVersion')")]
        if tables:
            conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in tables))


def open_registry(kind: str, home, request):
    from runtime.registry import Registry

    if kind == "sqlite":
        return Registry.open(home)
    from runtime.store.postgres import PostgresStore

    url = request.getfixturevalue("pg_url")
    empty_database(url)
    return Registry(PostgresStore(url), home)


@pytest.fixture(params=["sqlite", "postgres"])
def registry(request, home):
    reg = open_registry(request.param, home, request)
    yield reg
    reg.close()
