"""The SQLite store: WAL, schema version and migrations, transactions, concurrent writers."""
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from runtime.errors import StoreError
from runtime.schemas import ENGINE, MLINSTANCE
from runtime.store import Scope, open_store
from runtime.store.sqlite import SCHEMA_VERSION

SCOPE = Scope("org", "prod")


def _doc(id, **extra):
    return {"id": id, "name": f"n-{id}", "created": "2024-01-01T00:00:00.000Z",
            "updated": "2024-01-01T00:00:00.000Z", "deleted": False, **extra}


def test_new_store_is_wal_and_versioned(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/r.db")
    assert store.schema_version() == SCHEMA_VERSION
    conn = sqlite3.connect(tmp_path / "r.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    store.close()


def test_reopening_keeps_data_and_does_not_remigrate(tmp_path):
    store = open_store(tmp_path / "r.db")
    store.insert(ENGINE, SCOPE, _doc("e1"))
    store.close()
    again = open_store(tmp_path / "r.db")
    assert again.get(ENGINE, SCOPE, "e1")["name"] == "n-e1"
    again.close()


def test_a_newer_schema_is_refused(tmp_path):
    conn = sqlite3.connect(tmp_path / "r.db")
    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this runtime"):
        open_store(tmp_path / "r.db")


def test_failed_transaction_writes_nothing(tmp_path):
    store = open_store(tmp_path / "r.db")
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.insert(ENGINE, SCOPE, _doc("e1"))
            store.insert(MLINSTANCE, SCOPE, _doc("m1", engineId="e1"))
            raise RuntimeError("boom")
    assert store.get(ENGINE, SCOPE, "e1") is None
    assert store.get(MLINSTANCE, SCOPE, "m1") is None
    store.close()


def test_scopes_do_not_see_each_other(tmp_path):
    store = open_store(tmp_path / "r.db")
    store.insert(ENGINE, SCOPE, _doc("e1"))
    assert store.get(ENGINE, Scope("org", "dev"), "e1") is None
    assert store.get(ENGINE, Scope("other", "prod"), "e1") is None
    store.close()


def test_other_store_urls_fail_clearly():
    with pytest.raises(StoreError, match="postgresql://USER@HOST"):
        open_store("mysql://db/registry")


def test_concurrent_writer_processes_lose_nothing(tmp_path):
    """Two processes (think: the server and a CLI) write the same file at once."""
    script = textwrap.dedent(f"""
        import sys
        from runtime.home import resolve_home
        from runtime.schemas import ENGINE, MLINSTANCE
        from runtime.registry import Caller, Registry
        reg = Registry.open(resolve_home({str(tmp_path / 'home')!r}))
        caller = Caller.local(org="o", sandbox="s", user_id=sys.argv[1])
        engine = reg.create(ENGINE, caller, {{"name": "e-" + sys.argv[1]}})
        for i in range(150):
            reg.create(MLINSTANCE, caller, {{"name": f"{{sys.argv[1]}}-{{i}}", "engineId": engine["id"]}})
        reg.close()
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script, who]) for who in ("server", "cli")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    conn = sqlite3.connect(tmp_path / "home" / "registry.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    names = {r[0] for r in conn.execute('SELECT name FROM "mlInstances"')}
    assert names == {f"{who}-{i}" for who in ("server", "cli") for i in range(150)}


def test_a_version_1_store_migrates_and_keeps_its_data(tmp_path):
    from runtime.store.sqlite import MIGRATIONS

    conn = sqlite3.connect(tmp_path / "r.db", isolation_level=None)
    MIGRATIONS[0](conn)
    conn.execute("PRAGMA user_version=1")
    conn.execute('INSERT INTO "engines" (id, org, sandbox, deleted, created, updated, name, doc) '
                 "VALUES ('e1', 'org', 'prod', 0, 't', 't', 'old', '{\"id\": \"e1\", \"name\": \"old\"}')")
    conn.close()
    store = open_store(tmp_path / "r.db")
    assert store.schema_version() == SCHEMA_VERSION >= 2
    assert store.get(ENGINE, SCOPE, "e1")["name"] == "old"
    store.close()


def test_name_filters_use_the_name_index_even_on_a_new_store(tmp_path):
    store = open_store(tmp_path / "r.db")
    store.close()
    conn = sqlite3.connect(tmp_path / "r.db")
    plan = " ".join(str(row) for row in conn.execute(
        'EXPLAIN QUERY PLAN SELECT doc FROM "mlInstances" WHERE org=? AND sandbox=? AND deleted=0 '
        "AND name=? ORDER BY created, rowid LIMIT 25", ("o", "s", "n")))
    assert "mlInstances_name" in plan


def test_more_ids_than_one_statement_binds_are_read_deleted_and_forgotten_whole(tmp_path):
    """Lists of ids go to SQLite in batches (store/sqlite_batches.py): 1,201 of them, across three
    batches, are all found, soft-deleted, and dropped from the run ledger and the schedules."""
    store = open_store(tmp_path / "r.db")
    ids = [f"e{i}" for i in range(1201)]
    with store.transaction():
        for id in ids:
            store.insert(ENGINE, SCOPE, _doc(id))
            store.ledger_put(SCOPE, id, "queued", {})
            store.schedule_put(SCOPE, {"id": id, "owner": "mlService", "owner_id": "s",
                                       "task": "train", "spec": {}, "next_fire": None})
    assert sorted(store.live_ids(ENGINE, SCOPE, "id", [*ids, "missing"])) == sorted(ids)
    assert store.soft_delete(ENGINE, SCOPE, ids[:1100], "2024-01-02T00:00:00.000Z") == 1100
    assert sorted(store.live_ids(ENGINE, SCOPE, "id", ids)) == sorted(ids[1100:])
    assert store.ledger_delete(ids) == 1201 and store.ledger_rows() == []
    assert store.schedule_delete(ids) == 1201 and store.schedule_rows() == []
    store.close()
