"""The search language over runs (runtime.run_search) on a real registry: which runs each query
finds, and how a malformed query is told."""
from __future__ import annotations

import pytest

from runtime.errors import BadRequest
from runtime.run_search import SearchSyntaxError, compile_filter
from runtime.run_views import RunViews, TableQuery
from runtime.schemas import EXPERIMENT, EXPERIMENT_RUN, MLINSTANCE, RunStatus

pytestmark = pytest.mark.stores   # each test on SQLite and on PostgreSQL (tests/store_params.py)


@pytest.fixture
def runs(registry, caller):
    """Four runs: (name, MAPE, learning_rate, optimizer, state, peak memory, tags)."""
    from runtime.cli.runs import ensure_engine

    engine = ensure_engine(registry, caller, "noop")
    instance = registry.create(MLINSTANCE, caller, {"name": "search", "engineId": engine["id"]})
    experiment = registry.create(EXPERIMENT, caller, {"name": "search", "mlInstanceId": instance["id"]})
    made = {}
    for name, mape, lr, optimizer, state, peak, tags in (
            ("a", 0.04, 0.1, "Adam", RunStatus.DONE, 900.0, {"team": "Forecast"}),
            ("b", 0.03, 0.01, "adam", RunStatus.DONE, 1500.0, {"team": "pricing"}),
            ("c", 0.20, 0.1, "SGD", RunStatus.DONE, 300.0, None),
            ("d", 0.01, 0.1, "Adam", RunStatus.FAILED, None, None)):
        run = registry.create_run(caller, experiment["id"], {"mode": "train", **({"tags": tags} if tags else {})})
        registry.annotate_run(caller.scope, run["id"], {"runtime": {"resolved": {
            "values": {"learning_rate": lr, "optimizer": optimizer}, "provenance": {}}}})
        registry.transition_run(caller.scope, run["id"], RunStatus.RUNNING)
        result = {"metrics": [{"name": "MAPE", "value": mape, "valueType": "double"}]}
        if peak is not None:
            result["system"] = {"sampled": True, "peak_memory_mb": peak, "mean_cpu_percent": 50.0}
        registry.annotate_run(caller.scope, run["id"], {"result": result})
        registry.transition_run(caller.scope, run["id"], state)
        made[name] = run["id"]
    return made


def _found(registry, caller, runs, search: str, sort: str = "created") -> list[str]:
    page = RunViews(registry).table(caller, TableQuery.parse({"filter": search, "sort": sort}))
    names = {v: k for k, v in runs.items()}
    return [names[r["id"]] for r in page["runs"]]


@pytest.mark.parametrize("search, expected", [
    ("metrics.MAPE < 0.05 and params.learning_rate = '0.1' and attributes.state = 'DONE'", ["a"]),
    ("metrics.MAPE < 0.05", ["a", "b", "d"]),
    ("metrics.MAPE <= 0.03 or params.optimizer = 'SGD'", ["b", "c", "d"]),
    ("params.learning_rate = 0.1 and (attributes.status = 'failed' or metrics.MAPE > 0.1)", ["c", "d"]),
    ("params.optimizer LIKE 'A%'", ["a", "d"]),            # LIKE is case-sensitive
    ("params.optimizer ILIKE 'a%'", ["a", "b", "d"]),      # ILIKE is not
    ("params.optimizer NOT LIKE 'A%'", ["b", "c"]),
    ("params.optimizer IN ('SGD', 'adam')", ["b", "c"]),
    ("params.optimizer NOT IN ('SGD', 'adam')", ["a", "d"]),
    ("tags.team = 'Forecast'", ["a"]),
    ("tags.team IS NOT NULL", ["a", "b"]),
    ("system.peak_memory_mb > 1000", ["b"]),
    ("system.peak_memory_mb IS NULL", ["d"]),
    ("attributes.mode = 'train' and metrics.MAPE != 0.2", ["a", "b", "d"]),
    ("params.optimizer = 'x'' OR 1=1 --'", []),            # a value is a value, never SQL
])
def test_queries_find_the_runs_they_describe(registry, caller, runs, search, expected):
    assert _found(registry, caller, runs, search) == expected


def test_a_search_sorts_and_counts_like_the_table(registry, caller, runs):
    assert _found(registry, caller, runs, "metrics.MAPE < 1", "-system.peak_memory_mb") == ["b", "a", "c", "d"]
    page = RunViews(registry).table(caller, TableQuery.parse({"filter": "metrics.MAPE < 0.05",
                                                               "limit": "1", "sort": "metric.MAPE"}))
    assert page["total"] == 3 and page["filter"] == "metrics.MAPE < 0.05"
    assert page["columns"]["system"] == ["peak_memory_mb", "mean_cpu_percent"]
    registry.delete(EXPERIMENT_RUN, caller, runs["a"])
    assert _found(registry, caller, runs, "tags.team IS NOT NULL") == ["b"]


def test_a_short_page_finds_what_the_whole_list_shows(registry, caller, runs):
    """A page expected within a short walk of the sort index probes each run walked instead of
    building every term's set of runs first: page by page, the same runs in the same order."""
    views = RunViews(registry)
    for search in ("metrics.MAPE < 0.1 and params.learning_rate > 0.05",
                   "metrics.MAPE < 1 and system.peak_memory_mb > 100"):
        for sort in ("metric.MAPE", "-metric.MAPE", "-system.peak_memory_mb"):
            whole = _found(registry, caller, runs, search, sort)
            pages = [r["id"] for start in range(len(whole) + 1) for r in views.table(
                caller, TableQuery.parse({"filter": search, "sort": sort, "limit": "1",
                                          "start": str(start)}))["runs"]]
            assert pages == [runs[name] for name in whole] and whole, (search, sort)


@pytest.mark.parametrize("search, position, token, expected", [
    ("metrics.MAPE < and x", 16, "and", "a number"),
    ("metrics.MAPE <", 15, "", "a number"),
    ("metrics.MAPE ~ 3", 14, "~", "a comparison (=, !=, <, <=, >, >=)"),
    ("foo.bar = 1", 1, "foo.bar", "metrics."),
    ("attributes.colour = 'red'", 1, "attributes.colour", "attributes.state"),
    ("metrics.MAPE = 'low'", 16, "'low'", "a number"),
    ("params.a = 1 and", 17, "", "'('"),
])
def test_a_malformed_query_points_at_its_token(search, position, token, expected):
    with pytest.raises(SearchSyntaxError) as caught:
        compile_filter(search)
    body = caught.value.to_body()
    assert body["status"] == 400 and isinstance(caught.value, BadRequest)
    assert body["position"] == position and body["token"] == token
    assert any(expected in e for e in body["expected"]), body["expected"]
    assert f"position {position}" in body["detail"]
    # the caret under the token
    assert body["detail"].splitlines()[-1].index("^") == position + 1


def test_values_are_parameters_not_sql():
    sql, args = compile_filter("params.name = 'Robert''); DROP TABLE runIndex; --' and metrics.m > 1e-3")
    assert "DROP" not in sql and "Robert" not in sql
    assert args[-1] == pytest.approx(0.001) and any("DROP TABLE" in str(a) for a in args)


def test_a_run_without_a_summary_says_why():
    from runtime.run_views import system_summary

    ray = system_summary({}, {"plan": {"backend": "ray"}}, running=False)
    assert ray["sampled"] is False and "Ray" in ray["reason"]
    assert system_summary({}, {"plan": {"backend": "python-cpu"}}, running=True)["sampled"]
    done = {"sampled": True, "peak_memory_mb": 10.0}
    assert system_summary({"system": done}, {}, running=False) == done
