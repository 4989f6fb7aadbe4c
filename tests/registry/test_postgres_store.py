"""The PostgreSQL store on a real server (tests/pg_cluster.py): schema versions and migrations,
listings that answer as SQLite's do, and the writes that must stay single under concurrency."""
import json
import subprocess
import sys
import threading

import pytest

from runtime.errors import StoreError
from runtime.listing import ListQuery, parse_orderby, parse_property
from runtime.schemas import ENGINE, EXPERIMENT, MLINSTANCE, MLSERVICE
from runtime.store import Scope, open_store

SCOPE = Scope("org", "prod")


def _doc(id, **extra):
    return {"id": id, "name": f"n-{id}", "created": "2024-01-01T00:00:00.000Z",
            "updated": "2024-01-01T00:00:00.000Z", "deleted": False, **extra}


@pytest.fixture(scope="module")
def pg_url(pg_server):
    return pg_server.create_database("test_postgres_store")


@pytest.fixture
def store(pg_url):
    from runtime.store.postgres import empty_registry

    store = open_store(pg_url)
    empty_registry(store)
    yield store
    store.close()


def test_a_new_database_is_migrated_to_the_current_version(store, pg_url):
    from runtime.store.postgres_schema import SCHEMA_VERSION

    assert store.schema_version() == SCHEMA_VERSION
    store.insert(ENGINE, SCOPE, _doc("e1"))
    again = open_store(pg_url)   # a second server on the same database: nothing re-runs
    assert again.get(ENGINE, SCOPE, "e1")["name"] == "n-e1"
    assert again.schema_version() == SCHEMA_VERSION
    again.close()


def test_a_newer_schema_is_refused(pg_server):
    import psycopg

    from runtime.store.postgres_schema import SCHEMA_VERSION

    url = pg_server.create_database("test_pg_newer")
    open_store(url).close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer than this runtime"):
        open_store(url)


def test_every_earlier_version_migrates_and_keeps_its_data(pg_server):
    import psycopg

    from runtime.store.postgres_schema import MIGRATIONS, SCHEMA_VERSION, migrate

    for version in range(1, SCHEMA_VERSION):
        url = pg_server.create_database(f"test_pg_from_v{version}")
        text = '{"name": "old", "id": "e1"}'
        with psycopg.connect(url, autocommit=True) as conn:
            assert migrate(conn, target=version) == (0, version)
            conn.execute(
                'INSERT INTO "engines" (id, org, sandbox, deleted, created, updated, name, doc, body) '
                "VALUES ('e1', 'org', 'prod', 0, 't', 't', 'old', %s, %s)", (text, text))
            conn.execute(
                'INSERT INTO "runLedger" (run_id, org, sandbox, seq, phase, doc) '
                "VALUES ('r1', 'org', 'prod', nextval('\"runLedger_seq\"'), 'queued', '{}')")
        store = open_store(url)
        assert store.schema_version() == SCHEMA_VERSION == len(MIGRATIONS)
        assert list(store.get(ENGINE, SCOPE, "e1").items()) == [("name", "old"), ("id", "e1")]
        assert store.list(ENGINE, SCOPE, ListQuery())[1] == 1   # counted by a later migration
        store.ledger_put(SCOPE, "r2", "queued", {})
        assert [r["run_id"] for r in store.ledger_rows()] == ["r1", "r2"]
        store.close()


def test_two_servers_starting_on_one_empty_database_both_open_it(pg_server):
    """Each process migrates under an advisory lock: one creates the tables, the other waits and
    finds them made."""
    url = pg_server.create_database("test_pg_race")
    script = ("import sys; from runtime.store import open_store; s = open_store(sys.argv[1]); "
              "print(s.schema_version()); s.close()")
    procs = [subprocess.Popen([sys.executable, "-c", script, url], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert len({out.strip() for out, _ in outs}) == 1


def test_the_sqlite_store_does_not_import_psycopg(tmp_path):
    script = ("import sys; from runtime.store import open_store; "
              f"open_store({str(tmp_path / 'r.db')!r}).close(); print('psycopg' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "False"


def test_a_missing_psycopg_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "psycopg", None)
    with pytest.raises(StoreError, match=r"pip install 'mlinstance-runtime\[postgres\]'"):
        open_store("postgresql://nobody@127.0.0.1:1/none")


def test_an_unreachable_server_is_a_store_error_without_its_password():
    with pytest.raises(StoreError, match="Cannot connect to the registry store") as failed:
        open_store("postgresql://nobody:secret@127.0.0.1:1/none")
    assert "secret" not in str(failed.value)


def test_the_password_stays_out_of_the_url_shown(store):
    from runtime.store.postgres import redacted

    assert redacted("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redacted("postgresql://u@h/db") == "postgresql://u@h/db"


def test_documents_round_trip_and_scopes_do_not_see_each_other(store):
    store.insert(ENGINE, SCOPE, _doc("e1", artifacts={"a": [1, 2.5, None, True]}, score=float("nan")))
    doc = store.get(ENGINE, SCOPE, "e1")
    assert doc["artifacts"] == {"a": [1, 2.5, None, True]} and doc["score"] is None
    assert store.get(ENGINE, Scope("org", "dev"), "e1") is None
    store.replace(ENGINE, SCOPE, {**doc, "name": "renamed"})
    assert store.get(ENGINE, SCOPE, "e1")["name"] == "renamed"
    assert store.soft_delete(ENGINE, SCOPE, ["e1", "e2"], "2024-02-01T00:00:00.000Z") == 1
    gone = store.get(ENGINE, SCOPE, "e1")
    assert gone["deleted"] is True and gone["updated"] == "2024-02-01T00:00:00.000Z"
    assert list(gone) == list(doc)   # the keys in the order written, as SQLite keeps them
    assert store.live_ids(ENGINE, SCOPE, "id", ["e1"]) == []
    assert store.get_text(ENGINE, SCOPE, "e1") is None   # deleted
    store.insert(ENGINE, SCOPE, _doc("e3", note="é"))
    assert store.get_text(ENGINE, SCOPE, "e3") == json.dumps(store.get(ENGINE, SCOPE, "e3"),
                                                              separators=(",", ":"))


def test_a_failed_transaction_writes_nothing_and_nested_use_joins(store):
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.insert(ENGINE, SCOPE, _doc("e1"))
            with store.transaction():
                store.insert(MLINSTANCE, SCOPE, _doc("m1", engineId="e1"))
            assert store.get(MLINSTANCE, SCOPE, "m1") is not None   # seen inside
            raise RuntimeError("boom")
    assert store.get(ENGINE, SCOPE, "e1") is None
    assert store.get(MLINSTANCE, SCOPE, "m1") is None


LISTINGS = [
    ("deleted==false", "created"), ("deleted==false", "-created"), ("deleted==false", "name"),
    ("deleted==false", "-name"), ("name==Beta", "created"), ("name!=Beta", "-updated"),
    ("engineId==e2", "name"), ("deleted==true", "created"), ("deleted!=true", "-name"),
    ("created>=2024-01-03T00:00:00.000Z,created<2024-01-06T00:00:00.000Z", "-created"),
    ("description==d1", "name"), ("description!=d1", "description"),
    ("description!=d1", "-description,name"), ("", "updated,-name"),
    # a NUL byte no PostgreSQL text can hold (the fuzzer's): compared as SQLite compares it
    ("name==Be\x00ta", "created"), ("name!=Beta\x00", "name"), ("engineId==e2\x00", "name"),
    ("description!=\x00", "name"), ("description==d1\x00", "-name"),
]


@pytest.mark.parametrize("prop,orderby", LISTINGS)
def test_listings_answer_as_sqlites_do(store, tmp_path, prop, orderby):
    """The same documents, the same filters and orders: the same pages and totals (byte-order
    text, NULLs first, ties in insertion order), including fields that live only in the JSON."""
    sqlite = open_store(tmp_path / "r.db")
    names = ["alpha", "Beta", "beta", None, "Beta", "_x", "Zed", "alpha", "é", "10"]
    for i, name in enumerate(names):
        extra = {"engineId": f"e{i % 3}"}
        if i % 4:
            extra["description"] = f"d{i % 3}"
        doc = _doc(f"m{i}", **extra, created=f"2024-01-{1 + i // 2:02d}T00:00:00.000Z",
                   updated=f"2024-01-0{1 + i % 3}T00:00:00.000Z", deleted=i == 6)
        if name is None:
            doc.pop("name")
        else:
            doc["name"] = name
        for s in (store, sqlite):
            s.insert(MLINSTANCE, SCOPE, doc)
    filters, _ = parse_property(MLINSTANCE, prop)
    order, _ = parse_orderby(MLINSTANCE, orderby)
    for start, limit in ((0, 25), (2, 3)):
        query = ListQuery(filters=filters, order=order, start=start, limit=limit)
        pg_docs, pg_total = store.list(MLINSTANCE, SCOPE, query)
        lite_docs, lite_total = sqlite.list(MLINSTANCE, SCOPE, query)
        assert [d["id"] for d in pg_docs] == [d["id"] for d in lite_docs]
        assert pg_total == lite_total
    sqlite.close()


def test_the_kept_counts_follow_inserts_deletes_and_moves(store, pg_url):
    """A plain listing's total comes from counts kept by triggers: they follow every write."""
    def totals(scope=SCOPE):
        return [store.list(ENGINE, scope, ListQuery(filters=parse_property(ENGINE, p)[0]))[1]
                for p in ("", "deleted==true")]

    with store.transaction():
        for i in range(5):
            store.insert(ENGINE, SCOPE, _doc(f"e{i}"))
        store.insert(ENGINE, Scope("org", "dev"), _doc("d1"))
    store.replace(ENGINE, SCOPE, _doc("e0", name="renamed"))
    assert totals() == [5, 0] and totals(Scope("org", "dev")) == [1, 0]
    store.soft_delete(ENGINE, SCOPE, ["e1", "e2"], "2024-02-01T00:00:00.000Z")
    assert totals() == [3, 2]
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.soft_delete(ENGINE, SCOPE, ["e3"], "2024-02-01T00:00:00.000Z")
            raise RuntimeError("rolled back")
    assert totals() == [3, 2] and totals(Scope("other", "prod")) == [0, 0]
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as other:   # a writer outside the runtime
        other.execute("DELETE FROM engines WHERE id = 'e4'")
    assert totals() == [2, 2]


def test_the_kept_counts_of_a_reference_follow_every_write(store, pg_url):
    """A listing filtered by one reference (an engine's MLInstances) totals from kept counts too:
    they agree with counting the rows after inserts, moves, deletes, a rollback and a writer
    outside the runtime."""
    import psycopg

    def totals(engine, scope=SCOPE):
        kept = [store.list(MLINSTANCE, scope, ListQuery(filters=parse_property(
            MLINSTANCE, f"engineId=={engine}{extra}")[0]))[1] for extra in ("", ",deleted==true")]
        with psycopg.connect(pg_url, autocommit=True) as conn:
            counted = [conn.execute('SELECT count(*) FROM "mlInstances" WHERE org=%s AND sandbox=%s'
                                    ' AND "engineId"=%s AND deleted=%s',
                                    (scope.org, scope.sandbox, engine, d)).fetchone()[0]
                       for d in (0, 1)]
        assert kept == counted
        return kept

    with store.transaction():
        for i in range(6):
            store.insert(MLINSTANCE, SCOPE, _doc(f"m{i}", engineId="a" if i < 4 else "b"))
        store.insert(MLINSTANCE, Scope("org", "dev"), _doc("d1", engineId="a"))
        store.insert(MLINSTANCE, SCOPE, _doc("none"))   # no engine: counted nowhere
    assert totals("a") == [4, 0] and totals("b") == [2, 0]
    assert totals("a", Scope("org", "dev")) == [1, 0]
    store.replace(MLINSTANCE, SCOPE, _doc("m0", engineId="b"))   # moved to another engine
    store.replace(MLINSTANCE, SCOPE, _doc("m1", engineId="a", name="renamed"))
    assert totals("a") == [3, 0] and totals("b") == [3, 0]
    store.soft_delete(MLINSTANCE, SCOPE, ["m1", "m4"], "2024-02-01T00:00:00.000Z")
    assert totals("a") == [2, 1] and totals("b") == [2, 1]
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.soft_delete(MLINSTANCE, SCOPE, ["m2"], "2024-02-01T00:00:00.000Z")
            raise RuntimeError("rolled back")
    assert totals("a") == [2, 1] and totals("c") == [0, 0]
    with psycopg.connect(pg_url, autocommit=True) as other:   # a writer outside the runtime
        other.execute("DELETE FROM \"mlInstances\" WHERE id = 'm2'")
        other.execute("UPDATE \"mlInstances\" SET \"engineId\" = 'c' WHERE id = 'm3'")
    assert totals("a") == [0, 1] and totals("c") == [1, 0]
    docs, total = store.list(MLINSTANCE, SCOPE, ListQuery(filters=parse_property(
        MLINSTANCE, "engineId==b,name==n-m5")[0]))   # two filters: counted, not kept
    assert [d["id"] for d in docs] == ["m5"] and total == 1

def test_listing_on_json_fields_of_every_type(store):
    for i in range(4):
        store.insert(MLSERVICE, SCOPE, _doc(f"s{i}", mlInstanceId="m", scoringTimeframe=i * 10,
                                            scoringDataSetId=f"d{i}"))
    store.insert(EXPERIMENT, SCOPE, _doc("x1", mlInstanceId="m", template={"schedule": {"a": 1}}))
    store.insert(EXPERIMENT, SCOPE, _doc("x2", mlInstanceId="m", template={"schedule": None}))
    filters, _ = parse_property(MLSERVICE, "scoringTimeframe>=10,scoringTimeframe<30")
    order, _ = parse_orderby(MLSERVICE, "-scoringTimeframe")
    docs, total = store.list(MLSERVICE, SCOPE, ListQuery(filters=filters, order=order))
    assert [d["id"] for d in docs] == ["s2", "s1"] and total == 2
    assert store.live_ids(MLSERVICE, SCOPE, "scoringDataSetId", ["d3", "d0"]) == ["s0", "s3"]
    assert [(k, d["id"]) for _, k, d in store.scheduled_documents()] == [
        ("mlService", f"s{i}") for i in range(4)] + [("experiment", "x1")]


def test_run_status_and_ledger(store):
    store.put_run_status(SCOPE, "r1", "RUNNING", {"state": "RUNNING"})
    store.put_run_status(SCOPE, "r2", "DONE", {"state": "DONE"})
    store.put_run_status(SCOPE, "r1", "QUEUED", {"state": "QUEUED"})
    assert store.get_run_status(SCOPE, "r1") == {"state": "QUEUED"}
    assert store.live_run_states() == [("r1", "org", "prod", "QUEUED")]
    store.ledger_put(SCOPE, "r1", "queued", {"owner": {"pid": 1}})
    store.ledger_put(SCOPE, "r2", "queued", {})
    store.ledger_put(SCOPE, "r1", "running", {"granted": {"cpu": 1}})
    rows = store.ledger_rows()
    assert [r["run_id"] for r in rows] == ["r1", "r2"]
    assert rows[0]["phase"] == "running" and rows[0]["owner"] == {"pid": 1}
    assert rows[0]["granted"] == {"cpu": 1}
    assert store.ledger_get("r2")["phase"] == "queued" and store.ledger_get("zz") is None
    assert store.ledger_delete(["r1", "zz"]) == 1


def test_data_version_changes_on_others_commits_only(store):
    first = store.data_version()
    store.insert(ENGINE, SCOPE, _doc("mine"))
    assert store.data_version() == first   # this thread's own commit
    thread = threading.Thread(target=store.insert, args=(ENGINE, SCOPE, _doc("theirs")))
    thread.start()
    thread.join()
    assert store.data_version() != first


def test_concurrent_writers_keep_queue_places_leases_and_fires_single(store, pg_url):
    """Four threads, each with its own store (think: four servers), at once: every ledger row
    has its own queue place, one holder gets the lease, one claim of a fire wins, and a
    read-modify-write in a transaction loses no update."""
    stores = [open_store(pg_url) for _ in range(4)]
    store.schedule_put(SCOPE, {"id": "sc", "owner": "mlService", "owner_id": "s", "task": "train",
                               "spec": {}, "next_fire": "2024-01-01T00:00:00.000Z"})
    store.service_state_put(SCOPE, "svc", {"n": 0})
    barrier = threading.Barrier(4)
    results: dict[str, list] = {"lease": [], "fire": []}

    def work(i, s):
        barrier.wait()
        for j in range(25):
            s.ledger_put(SCOPE, f"r{i}-{j}", "queued", {})
            with s.transaction():
                state = s.service_state(SCOPE, "svc")
                s.service_state_put(SCOPE, "svc", {"n": state["n"] + 1})
        results["lease"].append(s.lease_acquire("scheduler", f"h{i}", 30.0, 1000.0))
        results["fire"].append(s.schedule_advance("sc", "2024-01-01T00:00:00.000Z",
                                                  next_fire="2024-01-02T00:00:00.000Z",
                                                  last_run_id=f"run-{i}"))

    threads = [threading.Thread(target=work, args=(i, s)) for i, s in enumerate(stores)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seqs = [r["seq"] for r in store.ledger_rows()]
    assert len(seqs) == len(set(seqs)) == 100
    assert store.service_state(SCOPE, "svc") == {"n": 100}
    assert sorted(results["lease"]) == [False, False, False, True]
    assert sorted(results["fire"]) == [False, False, False, True]
    assert store.schedule_rows()[0]["next_fire"] == "2024-01-02T00:00:00.000Z"
    for s in stores:
        s.close()


def test_schedules_service_states_leases_and_datasets(store):
    row = {"id": "sc", "owner": "mlService", "owner_id": "s", "task": "train", "spec": {"b": 1},
           "next_fire": None}
    store.schedule_put(SCOPE, row)
    assert store.schedule_advance("sc", None, next_fire="2024-01-01T00:00:00.000Z", doc={"k": 1})
    assert not store.schedule_advance("sc", None, next_fire="2024-01-03T00:00:00.000Z")
    assert store.schedule_next_fire() == "2024-01-01T00:00:00.000Z"
    assert [r["id"] for r in store.schedule_due("2024-01-02T00:00:00.000Z")] == ["sc"]
    assert store.schedule_due("2023-12-31T00:00:00.000Z") == []
    store.schedule_update("sc", last_run_id="r9")
    got = store.schedule_rows(SCOPE, "s")[0]
    assert got["spec"] == {"b": 1} and got["doc"] == {"k": 1} and got["last_run_id"] == "r9"
    store.schedule_put(SCOPE, {**row, "spec": {"b": 2}})
    assert store.schedule_rows()[0]["spec"] == {"b": 2}
    assert store.schedule_delete(["sc"]) == 1

    store.service_state_put(SCOPE, "a", {"awaitingPublish": ["r1"]})
    store.service_state_put(SCOPE, "b", {"awaitingPublish": []})
    store.service_state_put(SCOPE, "c", {"awaitingPublish": "odd"})
    assert [i for _, i, _ in store.service_states_waiting()] == ["a"]
    assert store.service_state(SCOPE, "zz") == {}

    assert store.lease_acquire("L", "h1", 10.0, 100.0)
    assert not store.lease_acquire("L", "h2", 10.0, 105.0)
    assert store.lease_acquire("L", "h1", 10.0, 105.0)   # renewed
    assert store.lease_acquire("L", "h2", 10.0, 116.0)   # expired
    assert store.lease_take("L", "h2", "h3", 10.0, 117.0) and not store.lease_take("L", "h2", "h4", 1, 1)
    store.lease_release("L", "h9")
    assert store.lease_holder("L") == ("h3", 127.0)
    store.lease_release("L", "h3")
    assert store.lease_holder("L") is None

    entry = {"id": "d", "uri": "file:///x", "format": "csv", "created": "c"}
    assert store.dataset_put(SCOPE, entry) and not store.dataset_put(SCOPE, {**entry, "uri": "y"})
    assert store.dataset_put(SCOPE, {**entry, "uri": "file:///y"}, replace=True)
    assert store.dataset_list(SCOPE) == [{**entry, "uri": "file:///y"}]
    assert store.dataset_delete(SCOPE, "d") and not store.dataset_delete(SCOPE, "d")


def test_schedule_fingerprint_changes_on_every_write_of_an_owner(store):
    before = store.schedule_fingerprint()
    store.insert(MLSERVICE, SCOPE, _doc("s1", mlInstanceId="m"))
    created = store.schedule_fingerprint()
    store.soft_delete(MLSERVICE, SCOPE, ["s1"], "2024-01-01T00:00:00.000Z")
    assert len({before, created, store.schedule_fingerprint()}) == 3


def test_many_ids_in_one_statement(store):
    ids = [f"e{i}" for i in range(1201)]
    with store.transaction():
        for id in ids:
            store.insert(ENGINE, SCOPE, _doc(id))
    assert sorted(store.live_ids(ENGINE, SCOPE, "id", [*ids, "missing"])) == sorted(ids)
    assert store.soft_delete(ENGINE, SCOPE, ids[:1100], "2024-01-02T00:00:00.000Z") == 1100
    assert sorted(store.live_ids(ENGINE, SCOPE, "id", ids)) == sorted(ids[1100:])


def test_reads_survive_a_dropped_connection_and_sessions_have_timeouts(store, pg_url):
    """A database restart or failover drops the pooled connections: the next read reconnects."""
    import psycopg

    store.insert(ENGINE, SCOPE, _doc("e1"))
    assert store.get(ENGINE, SCOPE, "e1") is not None
    with psycopg.connect(pg_url, autocommit=True) as admin:
        dropped = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
            "datname = current_database() AND pid <> pg_backend_pid()").fetchone()[0]
    assert dropped >= 1
    assert store.get(ENGINE, SCOPE, "e1")["name"] == "n-e1"
    with store.connection() as conn:
        assert conn.execute("SHOW lock_timeout").fetchone()[0] == "30s"
        assert conn.execute("SHOW idle_in_transaction_session_timeout").fetchone()[0] == "2min"


def test_a_document_with_a_nul_byte_is_a_400_and_writes_nothing(store):
    """No PostgreSQL text holds U+0000 (SQLite's does): a clear 400, not a store error."""
    from runtime.errors import BadRequest

    for field, value in (("name", "a\x00b"), ("description", "d\x00"), ("tags", {"k\x00": "v"})):
        with pytest.raises(BadRequest, match="NUL byte"):
            store.insert(MLINSTANCE, SCOPE, _doc("nul", **{field: value}))
        assert store.get(MLINSTANCE, SCOPE, "nul") is None
    store.insert(MLINSTANCE, SCOPE, _doc("nul", name="fine \\u0000 as six characters"))
    with pytest.raises(BadRequest, match="NUL byte"):
        store.replace(MLINSTANCE, SCOPE, _doc("nul", name="x\x00"))
    assert store.get(MLINSTANCE, SCOPE, "nul")["name"] == "fine \\u0000 as six characters"
