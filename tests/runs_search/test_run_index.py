"""The runs index on both stores (store/sqlite_runs.py, store/postgres_runs.py): it follows a run's
insert, parameters, metrics, status and deletion, and one set of runs written to an SQLite and a
PostgreSQL registry gives the same table pages, values, series, keys and search answers."""
from __future__ import annotations

import json

import pytest

from runtime.metrics_series import METRICS_FILE
from runtime.registry import Caller, Registry
from runtime.run_views import RunViews, TableQuery
from runtime.schemas import EXPERIMENT, EXPERIMENT_RUN, MLINSTANCE, RunStatus

pytestmark = pytest.mark.stores   # `registry`: each test on SQLite and on PostgreSQL


@pytest.fixture(scope="module")
def pg_url(pg_server) -> str:
    """A database of this module's own, for the tests that compare both stores side by side."""
    return pg_server.create_database("runs_index_both")


def _open(kind: str, root, pg_url: str) -> Registry:
    from runtime.home import resolve_home

    return Registry.open(resolve_home(root / "home", db=pg_url if kind == "postgresql" else None))


def _experiment(registry, caller, name="index"):
    from runtime.cli.runs import ensure_engine

    engine = ensure_engine(registry, caller, "noop")
    instance = registry.create(MLINSTANCE, caller, {"name": name, "engineId": engine["id"]})
    return registry.create(EXPERIMENT, caller, {"name": name, "mlInstanceId": instance["id"]})


def _run(registry, caller, experiment, steps=(), final=None, params=None, state=RunStatus.DONE,
         tags=None, system=None):
    """A run as the run path writes it: created, its resolved parameters, RUNNING, its series
    read from metrics.jsonl, its result, then its end state."""
    run = registry.create_run(caller, experiment["id"], {"mode": "train", **({"tags": tags} if tags else {})})
    folder = registry.home.runs / run["id"]
    folder.mkdir(parents=True)
    with open(folder / METRICS_FILE, "w") as fh:
        for step, value in steps:
            fh.write(json.dumps({"name": "loss", "value": value, "step": step, "ts": 0}) + "\n")
    registry.annotate_run(caller.scope, run["id"], {"runtime": {"resolved": {
        "values": params or {}, "provenance": {k: "cli" for k in params or {}}}}})
    registry.transition_run(caller.scope, run["id"], RunStatus.RUNNING)
    RunViews(registry).ingest(caller.scope, run["id"])
    result = {}
    if final is not None:
        result["metrics"] = [{"name": "loss", "value": final, "valueType": "double"}]
    if system is not None:
        result["system"] = {"sampled": True, **system}
    if result:
        registry.annotate_run(caller.scope, run["id"], {"result": result})
    registry.transition_run(caller.scope, run["id"], state)
    return run["id"]


def test_the_index_follows_runs_and_sorts_by_final_or_best(registry, caller):
    """tests/web/test_metrics_series.py's table test, on each store."""
    experiment = _experiment(registry, caller)
    views = RunViews(registry)
    a = _run(registry, caller, experiment, [(1, 0.9), (2, 0.2), (3, 0.5)], params={"lr": 0.1})
    b = _run(registry, caller, experiment, [(1, 0.8), (2, 0.4)], final=0.3, params={"lr": 0.01})
    c = _run(registry, caller, experiment, [], params={"lr": 1.0})
    assert views.ingest(caller.scope, a) == 0          # already read: nothing twice
    assert views.series(caller, a)["series"]["loss"] == {"steps": [1, 2, 3], "values": [0.9, 0.2, 0.5]}

    def order(sort, **query):
        return [r["id"] for r in views.table(caller, TableQuery.parse({"sort": sort, **query}))["runs"]]

    assert order("metric.loss") == [b, a, c] and order("-metric.loss") == [a, b, c]
    assert order("best.loss") == [a, b, c]             # best: a 0.2, b 0.3
    assert order("param.lr") == [b, a, c] and order("-param.lr") == [c, a, b]
    assert order("-created", start="1", limit="1") == [b]
    page = views.table(caller, TableQuery.parse({"sort": "-created", "limit": "2"}))
    assert page["total"] == 3 and [r["id"] for r in page["runs"]] == [c, b]
    assert page["runs"][1]["metrics"]["loss"] == 0.3 and page["runs"][1]["best"]["loss"] == 0.3
    assert page["columns"]["params"] == ["lr"]
    assert page["runs"][0]["state"] == "DONE" and page["runs"][0]["duration_s"] >= 0
    assert page["runs"][0]["engine"]["name"] == "noop" and page["runs"][0]["experiment"]["name"] == "index"
    assert views.table(caller, TableQuery.parse({"state": "FAILED"}))["total"] == 0
    assert views.table(caller, TableQuery.parse({"experimentId": experiment["id"]}))["total"] == 3
    index = registry.runs_index()
    assert index.owners_of(a) == (page["runs"][0]["engineId"], page["runs"][0]["mlInstanceId"])
    assert index.value_keys(caller.scope)["param"] == ["lr"]
    assert index.scopes_in_use()[0]["runs"] == 3
    registry.delete(EXPERIMENT, caller, experiment["id"])   # deleted runs leave the table
    assert views.table(caller, TableQuery.parse({}))["total"] == 0
    assert index.value_keys(caller.scope)["param"] == []


def test_a_run_in_flight_shows_its_state_and_its_last_step(registry, caller):
    experiment = _experiment(registry, caller)
    run = registry.create_run(caller, experiment["id"], {"mode": "train"})
    index = registry.runs_index()
    rows, total = index.table_page(caller.scope, {}, None, "created", True, 0, 10)
    assert total == 1 and rows[0]["state"] == "PENDING" and rows[0]["started"] is None
    registry.transition_run(caller.scope, run["id"], RunStatus.RUNNING)
    points = [{"name": "loss", "value": v, "step": s, "ts": 0.0} for s, v in ((1, 0.5), (2, 0.7), (2, 0.25))]
    assert index.add_points(run["id"], lambda offset: (points, 10)) == 3
    assert index.add_points(run["id"], lambda offset: ([], offset)) == 0
    assert index.series([run["id"]])[run["id"]]["loss"] == {"steps": [1, 2], "values": [0.5, 0.25]}
    values = index.values_of([run["id"]])[run["id"]]
    assert values["metric"] == {"loss": 0.25} and values["best"] == {"loss": 0.25}
    rows, _ = index.table_page(caller.scope, {"state": "RUNNING"}, "metric", "loss", False, 0, 10)
    assert rows[0]["id"] == run["id"] and rows[0]["started"] and rows[0]["ended"] is None


# --- one set of runs, both stores ----------------------------------------------------------------

# name, series, final, params, state, tags, system summary. Ties in a sort fall back to run ids,
# which differ between the two registries: the values are distinct where the tests sort on them.
_RUNS = (
    ("a", [(1, 0.9), (2, 0.2)], 0.04, {"lr": 0.1, "optimizer": "Adam", "layers": 2, "flag": True},
     RunStatus.DONE, {"team": "Forecast"}, {"peak_memory_mb": 900.0, "mean_cpu_percent": 50}),
    ("b", [(1, 0.8)], 0.03, {"lr": 0.01, "optimizer": "adam", "layers": "2", "flag": False},
     RunStatus.DONE, {"team": "pricing"}, {"peak_memory_mb": 1500.0, "mean_cpu_percent": 20}),
    ("c", [], 0.2, {"lr": "0.1", "optimizer": "SGD", "layers": 3, "grid": {"a": 1}},
     RunStatus.DONE, None, {"peak_memory_mb": 300.0}),
    ("d", [(1, 0.5), (2, 0.01)], None, {"lr": 0.5, "optimizer": "Adam_x", "layers": "deep"},
     RunStatus.FAILED, {"team": "Forecast", "kind": "x%y"}, None),
    ("e", [(1, 1.0)], 1, {"lr": 1, "optimizer": "a_b"}, RunStatus.ABORTED, None, None),
    ("f", [], None, {}, RunStatus.DONE, None, None),
)

_SORTS = ("-created", "created", "metric.loss", "-metric.loss", "best.loss", "-best.loss",
          "param.lr", "-param.lr", "param.layers", "-param.layers", "param.optimizer",
          "-system.peak_memory_mb", "system.mean_cpu_percent", "state", "mode")
_SEARCHES = (
    "", "metrics.loss < 0.05", "metrics.loss >= 0.2 or attributes.state = 'FAILED'",
    "params.lr = '0.1'", "params.lr = 0.1", "params.lr != '0.1'", "params.lr > 0.05",
    "params.lr IN (0.1, 1)", "params.lr NOT IN ('0.1')", "params.layers = 2", "params.layers < 3",
    "params.layers = 'deep'", "params.layers > 'a'", "params.flag = 1", "params.optimizer LIKE 'Adam%'",
    "params.optimizer LIKE 'a\\_b'", "params.optimizer ILIKE 'ADAM%'", "params.optimizer NOT ILIKE '%a%'",
    "params.optimizer IN ('SGD', 'adam')", "params.grid LIKE '%a%'", "tags.team = 'Forecast'",
    "tags.kind LIKE 'x\\%y'", "tags.team IS NULL", "tags.team IS NOT NULL and metrics.loss > 0.035",
    "system.peak_memory_mb > 500", "system.peak_memory_mb IS NULL", "system.mean_cpu_percent = 50",
    "best.loss <= 0.2", "attributes.state IN ('DONE', 'ABORTED')", "attributes.state != 'DONE'",
    "attributes.mode = 'train' and params.lr = 0.1 and metrics.loss < 1",
    "attributes.duration >= 0", "attributes.started IS NOT NULL", "attributes.ended IS NULL",
    "attributes.id LIKE '%'", "params.optimizer = 'x'' OR 1=1 --'", "metrics.loss > 1e999",
    "(params.lr = 0.1 or params.lr = 1) and (tags.team = 'Forecast' or metrics.loss = 1)",
)


@pytest.fixture(scope="module")
def both(pg_url, tmp_path_factory):
    """The same runs in an SQLite and a PostgreSQL registry: {store: (registry, caller, {name: id})}."""
    caller = Caller.local(org="TestOrg@AdobeOrg", sandbox="both", user_id="tester@example.com")
    out = {}
    for kind in ("sqlite", "postgresql"):
        registry = _open(kind, tmp_path_factory.mktemp(kind), pg_url)
        experiment = _experiment(registry, caller, "both")
        made = {}
        for name, steps, final, params, state, tags, system in _RUNS:
            made[name] = _run(registry, caller, experiment, steps, final, params, state, tags, system)
        gone = _run(registry, caller, experiment, [(1, 0.0)], 0.0, {"lr": 0.1})
        registry.delete(EXPERIMENT_RUN, caller, gone)
        out[kind] = (registry, caller, made)
    yield out
    for registry, _, _ in out.values():
        registry.close()


@pytest.fixture(params=["sorted", "walked"])
def pg_plan(request, monkeypatch):
    """PostgreSQL's two ways to a page (store/postgres_runs.py): a few matching runs sorted by
    their ids, or the value index walked in order (forced here with SMALL = 0)."""
    if request.param == "walked":
        from runtime.store import postgres_runs

        monkeypatch.setattr(postgres_runs, "SMALL", 0)
    return request.param


def _table(both, kind, **query):
    registry, caller, made = both[kind]
    names = {v: k for k, v in made.items()}
    page = RunViews(registry).table(caller, TableQuery.parse(query))
    # an object parameter is its JSON text on both, spaced as each database writes JSON
    runs = [{**r, "id": names[r["id"]], "params": {k: json.loads(v) if str(v).startswith("{") else v
                                                   for k, v in r["params"].items()}, "created": None, "started": None, "ended": None,
             "duration_s": None, "experimentId": None, "mlInstanceId": None, "engineId": None,
             "engine": r["engine"]["name"], "mlInstance": r["mlInstance"]["name"],
             "experiment": r["experiment"]["name"]} for r in page["runs"]]
    return {**page, "runs": runs, "filters": None}


@pytest.mark.parametrize("sort", _SORTS)
def test_both_stores_sort_and_page_alike(both, pg_plan, sort):
    for start, limit in ((0, 50), (0, 2), (2, 2), (5, 3)):
        query = {"sort": sort, "start": str(start), "limit": str(limit)}
        sqlite, postgres = _table(both, "sqlite", **query), _table(both, "postgresql", **query)
        assert postgres == sqlite, query
    for filters in ({"state": "DONE"}, {"state": "FAILED"}, {"filter": "metrics.loss > 0.035"}):
        assert _table(both, "sqlite", sort=sort, **filters) == _table(both, "postgresql", sort=sort, **filters)


@pytest.mark.parametrize("search", _SEARCHES)
def test_both_stores_find_the_same_runs(both, pg_plan, search):
    sqlite = _table(both, "sqlite", filter=search, sort="-metric.loss")
    postgres = _table(both, "postgresql", filter=search, sort="-metric.loss")
    assert postgres == sqlite


def test_both_stores_give_the_same_values_series_and_keys(both):
    answers = []
    for kind in ("sqlite", "postgresql"):
        registry, caller, made = both[kind]
        index = registry.runs_index()
        ids = [made[n] for n, *_ in _RUNS]
        values = index.values_of(ids)
        values[made["c"]]["param"]["grid"] = json.loads(values[made["c"]]["param"]["grid"])
        series = index.series(ids)
        answers.append(({n: values[made[n]] for n, *_ in _RUNS}, {n: series[made[n]] for n, *_ in _RUNS},
                        index.value_keys(caller.scope),
                        [{k: v for k, v in s.items()} for s in index.scopes_in_use()],
                        {k: [c["name"] for c in v] for k, v in index.scope_choices(caller.scope).items()}))
    assert answers[1] == answers[0]
    values = answers[1][0]
    # numbers stay numbers of their type, booleans are 0/1, an object is its JSON text
    assert values["a"]["param"]["layers"] == 2 and type(values["a"]["param"]["lr"]) is float
    assert values["a"]["param"]["flag"] == 1 and values["b"]["param"]["layers"] == "2"
    assert type(values["e"]["metric"]["loss"]) is int and values["c"]["param"]["grid"] == {"a": 1}


@pytest.fixture
def pg_registry(pg_server, tmp_path):
    registry = _open("postgresql", tmp_path, pg_server.create_database("runs_index_migration"))
    yield registry
    registry.close()


def test_the_migration_indexes_the_runs_recorded_before_it(pg_registry, caller):
    """PostgreSQL's create_run_views, run on a registry that already holds runs, indexes them as
    the triggers did."""
    from runtime.store.postgres_runs import create_run_views

    registry = pg_registry
    experiment = _experiment(registry, caller)
    for name, _, final, params, state, tags, system in _RUNS:
        _run(registry, caller, experiment, (), final, params, state, tags, system)
    index = registry.runs_index()
    before = [index.table_page(caller.scope, {}, kind, key, False, 0, 50)
              for kind, key in ((None, "created"), ("metric", "loss"), ("param", "lr"), ("tag", "team"))]
    values = index.values_of([r["id"] for r in before[0][0]])
    with registry.store.transaction(), registry.store.connection() as conn:
        conn.execute('DROP TABLE "runIndex", "runValues", "runMetrics", "runMetricsRead"')
        conn.execute('DROP FUNCTION "runIndexInsert", "runIndexUpdate", "runIndexStatusTrigger",'
                     ' "runValuesReplace", "runValuesResult", "runIndexStatus", "runDocValues",'
                     ' "runValueOf", "runSeconds", "runBest" CASCADE')
        create_run_views(conn.cursor())
    after = [index.table_page(caller.scope, {}, kind, key, False, 0, 50)
             for kind, key in ((None, "created"), ("metric", "loss"), ("param", "lr"), ("tag", "team"))]
    assert after == before and index.values_of([r["id"] for r in after[0][0]]) == values
    assert before[0][1] == len(_RUNS) and before[0][0][0]["state"] == "DONE"
