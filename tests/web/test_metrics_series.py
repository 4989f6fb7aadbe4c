"""Per-step metrics from the worker's file to the registry, and the runs table's query."""
from __future__ import annotations

import json

import pytest

from runtime.errors import BadRequest
from runtime.metrics_series import (METRICS_FILE, SeriesProgress, SeriesWriter, read_points,
                                    read_progress, split_metric_args)
from runtime.run_views import RunViews, TableQuery
from runtime.schemas import EXPERIMENT, MLINSTANCE, RunStatus
from waiting import until


def test_log_metric_keeps_its_old_call_form():
    assert split_metric_args("double", None) == (None, "double")
    assert split_metric_args(None, None) == (None, "double")
    assert split_metric_args(3, None) == (3, "double")
    assert split_metric_args(4.0, "long") == (4, "long")
    for bad in (1.5, True, [1]):
        with pytest.raises(ValueError, match="step"):
            split_metric_args(bad, None)


def test_the_writer_buffers_and_flushes_in_the_background(tmp_path):
    writer = SeriesWriter(tmp_path, flush_s=0.05)
    progress = SeriesProgress(3, "epochs", writer)
    for step in (1, 2, 3):
        writer.point("loss", 1 / step, step)
        progress.update(1)
    writer.point("loss", float("nan"), 4)          # not finite: stored as null, never as NaN text
    until(lambda: (tmp_path / METRICS_FILE).exists(), timeout_s=10, what="the background flush")
    writer.close()
    points, offset, bad = read_points(tmp_path / METRICS_FILE)
    assert [(p["step"], p["value"]) for p in points] == [(1, 1.0), (2, 0.5), (3, pytest.approx(1 / 3)), (4, None)]
    assert bad == 0 and offset == (tmp_path / METRICS_FILE).stat().st_size
    state = read_progress(tmp_path)
    assert state["bars"] == [{"desc": "epochs", "n": 3, "total": 3}]
    assert state["metrics"]["loss"]["step"] == 4


def test_a_half_written_line_waits_and_a_bad_line_is_skipped(tmp_path):
    path = tmp_path / METRICS_FILE
    path.write_text('{"name":"a","value":1,"step":1,"ts":0}\nnot json\n{"name":"a","val')
    points, offset, bad = read_points(path)
    assert len(points) == 1 and bad == 1
    with open(path, "a") as fh:
        fh.write('ue":2,"step":2,"ts":0}\n')
    more, offset2, _ = read_points(path, offset)
    assert [p["value"] for p in more] == [2.0] and offset2 == path.stat().st_size


@pytest.fixture
def experiment(registry, caller):
    from runtime.cli.runs import ensure_engine

    engine = ensure_engine(registry, caller, "noop")
    instance = registry.create(MLINSTANCE, caller, {"name": "series", "engineId": engine["id"]})
    return registry.create(EXPERIMENT, caller, {"name": "series", "mlInstanceId": instance["id"]})


def _run(registry, caller, experiment, steps, final=None, params=None):
    run = registry.create_run(caller, experiment["id"], {"mode": "train"})
    folder = registry.home.runs / run["id"]
    folder.mkdir(parents=True)
    with open(folder / METRICS_FILE, "w") as fh:
        for step, value in steps:
            fh.write(json.dumps({"name": "loss", "value": value, "step": step, "ts": 0}) + "\n")
    registry.annotate_run(caller.scope, run["id"], {"runtime": {"resolved": {
        "values": params or {}, "provenance": {k: "cli" for k in params or {}}}}})
    registry.transition_run(caller.scope, run["id"], RunStatus.RUNNING)
    RunViews(registry).ingest(caller.scope, run["id"])
    if final is not None:
        registry.annotate_run(caller.scope, run["id"], {"result": {"metrics": [
            {"name": "loss", "value": final, "valueType": "double"}]}})
    registry.transition_run(caller.scope, run["id"], RunStatus.DONE)
    return run["id"]


def test_ingest_is_incremental_and_the_table_sorts_by_final_or_best(registry, caller, experiment):
    views = RunViews(registry)
    a = _run(registry, caller, experiment, [(1, 0.9), (2, 0.2), (3, 0.5)], params={"lr": 0.1})
    b = _run(registry, caller, experiment, [(1, 0.8), (2, 0.4)], final=0.3, params={"lr": 0.01})
    c = _run(registry, caller, experiment, [], params={"lr": 1.0})
    assert views.ingest(caller.scope, a) == 0          # already read: nothing twice
    assert views.series(caller, a)["series"]["loss"] == {"steps": [1, 2, 3], "values": [0.9, 0.2, 0.5]}

    def order(sort):
        return [r["id"] for r in views.table(caller, TableQuery.parse({"sort": sort}))["runs"]]

    # final value: a's last step 0.5, b's result 0.3 (wins over its last step); c has none: last
    assert order("metric.loss") == [b, a, c]
    assert order("-metric.loss") == [a, b, c]
    assert order("best.loss") == [a, b, c]             # best: a 0.2, b 0.3
    assert order("param.lr") == [b, a, c] and order("-param.lr") == [c, a, b]
    page = views.table(caller, TableQuery.parse({"sort": "-created", "limit": "2"}))
    assert page["total"] == 3 and [r["id"] for r in page["runs"]] == [c, b]
    assert page["runs"][1]["metrics"]["loss"] == 0.3 and page["runs"][1]["best"]["loss"] == 0.3
    assert page["columns"]["params"] == ["lr"]        # the parameter that differs on the page
    assert page["runs"][0]["state"] == "DONE" and page["runs"][0]["duration_s"] >= 0
    assert views.table(caller, TableQuery.parse({"state": "FAILED"}))["total"] == 0
    assert views.table(caller, TableQuery.parse({"experimentId": experiment["id"]}))["total"] == 3
    registry.delete(EXPERIMENT, caller, experiment["id"])   # deleted runs leave the table
    assert views.table(caller, TableQuery.parse({}))["total"] == 0


@pytest.mark.parametrize("query, needle", [({"sort": "size"}, "size"), ({"limit": "0"}, "limit"),
                                           ({"colour": "red"}, "colour"), ({"start": "x"}, "integers")])
def test_bad_table_queries_say_what_is_wrong(query, needle):
    with pytest.raises(BadRequest, match=needle):
        TableQuery.parse(query).sort_spec()


def test_compare_needs_two_to_ten_runs(registry, caller, experiment):
    with pytest.raises(BadRequest, match="2 to 10"):
        RunViews(registry).compare(caller, ["only-one"])
