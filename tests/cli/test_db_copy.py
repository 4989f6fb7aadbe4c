"""`run db copy`: a SQLite home's whole registry into PostgreSQL and back, nothing lost, counts
verified; a destination that holds a registry is refused unless --force."""
import json
import sqlite3

import pytest

from runtime.cli.main import main
from runtime.listing import ListQuery, parse_property
from runtime.schemas import ENGINE, EXPERIMENT, EXPERIMENT_RUN, MLINSTANCE, MLSERVICE
from runtime.store import Scope, open_store

SCOPE = Scope("org", "prod")


def _doc(id, created, **extra):
    return {"id": id, "name": f"n-{id}", "created": created, "updated": created,
            "deleted": False, **extra}


def _fill(store):
    """A small registry with one of everything: a deleted object, finished and live runs with
    parameters, results, tags and metric series, the queue, a data set, a schedule."""
    store.insert(ENGINE, SCOPE, _doc("e1", "2024-01-01T00:00:00.000Z", artifacts={"x": 1}))
    store.insert(MLINSTANCE, SCOPE, _doc("m1", "2024-01-01T00:00:01.000Z", engineId="e1"))
    store.insert(MLINSTANCE, SCOPE, _doc("m2", "2024-01-01T00:00:02.000Z", engineId="e1"))
    store.soft_delete(MLINSTANCE, SCOPE, ["m2"], "2024-01-02T00:00:00.000Z")
    store.insert(EXPERIMENT, SCOPE, _doc("x1", "2024-01-01T00:00:03.000Z", mlInstanceId="m1"))
    index = store.run_index()
    for i, state in enumerate(("DONE", "DONE", "RUNNING")):
        run_id = f"r{i}"
        created = f"2024-01-01T00:01:0{i}.000Z"
        store.insert(EXPERIMENT_RUN, SCOPE, _doc(run_id, created, experimentId="x1", mode="train",
                                                 tags={"team": f"t{i}"}))
        status = {"status": {"tasks": [{"started": created, "ended": "2024-01-01T00:02:00.000Z"
                                        if state == "DONE" else None}]}}
        store.put_run_status(SCOPE, run_id, state, status)
        points = [{"name": "loss", "step": s, "value": 1.0 / (s + 1 + i), "ts": 1.0 + s}
                  for s in range(5)]
        index.add_points(run_id, lambda offset, p=points: (p, 500))
        if state == "DONE":
            run = store.get(EXPERIMENT_RUN, SCOPE, run_id)
            store.replace(EXPERIMENT_RUN, SCOPE, {
                **run, "runtime": {"resolved": {"values": {"lr": 0.1 * (i + 1), "depth": "3"}}},
                "result": {"metrics": [{"name": "rmse", "value": 2.0 + i}]}})
        else:
            store.ledger_put(SCOPE, run_id, "running", {"owner": {"pid": 1, "host": "h"}})
    store.insert(MLSERVICE, SCOPE, _doc("s1", "2024-01-01T00:03:00.000Z", mlInstanceId="m1"))
    store.schedule_put(SCOPE, {"id": "s1:train", "owner": "mlService", "owner_id": "s1",
                               "task": "train", "spec": {"cron": "0 * * * *"},
                               "next_fire": "2024-01-01T01:00:00.000Z"})
    store.service_state_put(SCOPE, "s1", {"paused": False})
    store.dataset_put(SCOPE, {"id": "d1", "uri": "file:///data/d1.csv", "format": "csv",
                              "created": "2024-01-01T00:00:00.000Z"})
    store.lease_acquire("scheduler", "someone", 30.0, 1.0)


def _view(store):
    """What a user sees of a registry, store-independent."""
    index = store.run_index()
    filters, _ = parse_property(MLINSTANCE, "deleted==true")
    rows, total = index.table_page(SCOPE, {}, "metric", "rmse", False, 0, 25)
    return {
        "engine": store.get(ENGINE, SCOPE, "e1"),
        "deleted": store.list(MLINSTANCE, SCOPE, ListQuery(filters=filters)),
        "runs": store.list(EXPERIMENT_RUN, SCOPE, ListQuery(limit=100)),
        "status": [store.get_run_status(SCOPE, f"r{i}") for i in range(3)],
        "table": ([r["id"] for r in rows], total),
        "values": index.values_of(["r0", "r1", "r2"]),
        "series": index.series(["r0", "r1", "r2"]),
        "ledger": store.ledger_rows(),
        "schedules": store.schedule_rows(),
        "state": store.service_state(SCOPE, "s1"),
        "datasets": store.dataset_list(SCOPE),
    }


@pytest.fixture(scope="module")
def pg_url(pg_server):
    return pg_server.create_database("test_db_copy")


def test_a_home_copies_into_postgresql_and_back(tmp_path, pg_url, capsys):
    home = tmp_path / "home"
    source = open_store(f"sqlite:///{home / 'registry.db'}")
    _fill(source)
    expected = _view(source)
    source.close()

    assert main(["db", "copy", "--from", str(home), "--to", pg_url, "--force", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["skipped"]["leases"].startswith("held by live processes")
    tables = report["tables"]
    assert tables["mlInstances"] == {"source": 2, "destination": 2}
    assert tables["runMetrics"] == {"source": 15, "destination": 15}
    assert tables["runStatus"]["destination"] == 3 and tables["schedules"]["destination"] == 1

    pg = open_store(pg_url)
    assert _view(pg) == expected
    assert pg.lease_holder("scheduler") is None
    pg.ledger_put(SCOPE, "r9", "queued", {})   # the queue goes on after the copied places
    assert [r["run_id"] for r in pg.ledger_rows()] == ["r2", "r9"]
    pg.ledger_delete(["r9"])
    pg.close()

    back = tmp_path / "back"
    assert main(["db", "copy", "--from", pg_url, "--to", str(back)]) == 0
    out = capsys.readouterr().out
    assert "runValues" in out and "MISMATCH" not in out
    again = open_store(back / "registry.db")
    assert _view(again) == expected
    again.close()
    original, copied = (sqlite3.connect(p / "registry.db") for p in (home, back))
    for table in ("engines", "mlInstances", "experimentRuns", "runIndex", "runValues", "runMetrics",
                  "runMetricsRead", "runStatus", "runLedger", "schedules", "serviceState"):
        rows = [sorted(c.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr)
                for c in (original, copied)]
        if table in ("engines", "mlInstances", "experimentRuns", "runStatus", "runLedger",
                     "serviceState"):   # JSON text: the same documents, keys perhaps reordered
            rows = [[tuple(json.loads(v) if isinstance(v, str) and v.startswith("{") else v
                           for v in row) for row in r] for r in rows]
        assert rows[0] == rows[1], table


def test_a_destination_with_a_registry_is_refused_without_force(tmp_path, pg_url, capsys):
    home = tmp_path / "home"
    source = open_store(f"sqlite:///{home / 'registry.db'}")
    source.insert(ENGINE, SCOPE, _doc("e1", "2024-01-01T00:00:00.000Z"))
    source.close()
    assert main(["db", "copy", "--from", str(home), "--to", pg_url, "--force"]) == 0
    assert main(["db", "copy", "--from", str(home), "--to", pg_url]) == 1
    assert "not empty (engines hold rows)" in capsys.readouterr().err
    assert main(["db", "copy", "--from", str(tmp_path / "nowhere"), "--to", pg_url]) == 1
    assert "No registry at" in capsys.readouterr().err
