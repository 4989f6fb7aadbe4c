"""The service layer's rules, shared by the API and the CLI."""
import pytest

from runtime.errors import BadRequest, Conflict, NotFound, ValidationFailed
from runtime.listing import parse_list_query
from runtime.schemas import (ENGINE, EXPERIMENT, EXPERIMENT_RUN, MLINSTANCE, MLSERVICE, MODEL,
                             RunStatus)
from runtime.registry import SECRET_MASK, Caller

pytestmark = pytest.mark.stores   # each test on SQLite and on PostgreSQL


def _engine(registry, caller, **extra):
    return registry.create(ENGINE, caller, {"name": "Retail", "type": "python", **extra})


def _instance(registry, caller, engine_id, **extra):
    body = {"name": "Retail instance", "description": "", "engineId": engine_id, "tasks": [
        {"name": "train", "parameters": [{"key": "learning_rate", "value": "0.3"}]},
        {"name": "fp", "parameters": [{"key": "window", "value": 4}]}], **extra}
    return registry.create(MLINSTANCE, caller, body)


def _count(registry, caller, kind, prop=None):
    return registry.list(kind, caller, parse_list_query(kind, {"property": prop} if prop else {})).total


def test_create_sets_server_fields_and_canonical_names(registry, caller):
    engine = _engine(registry, caller)
    assert engine["type"] == "Python"
    inst = _instance(registry, caller, engine["id"], id="client-id", created="1999-01-01")
    assert inst["id"] != "client-id" and inst["created"] != "1999-01-01"
    assert inst["createdBy"] == {"userId": "tester@example.com"}
    assert inst["created"] == inst["updated"] and inst["deleted"] is False
    assert [t["name"] for t in inst["tasks"]] == ["train", "featurePipeline"]
    assert inst["tasks"][1]["parameters"] == [{"key": "window", "value": "4"}]
    assert registry.get(MLINSTANCE, caller, inst["id"]) == inst


def test_unknown_fields_and_specifications_are_kept(registry, caller):
    engine = _engine(registry, caller)
    spec = {"type": "SparkTaskSpec", "driverMemoryInMB": 2048, "nested": {"a": [1, 2]}}
    inst = _instance(registry, caller, engine["id"], customField={"x": 1},
                     tasks=[{"name": "train", "specification": spec}])
    got = registry.get(MLINSTANCE, caller, inst["id"])
    assert got["customField"] == {"x": 1}
    assert got["tasks"][0]["specification"] == spec


@pytest.mark.parametrize("body, needle", [
    ({"engineId": "x"}, "name is required"),
    ({"name": "n"}, "engineId is required"),
    ({"name": "n", "engineId": "nope"}, "engineId 'nope' does not name an existing Engine"),
    ({"name": "n", "engineId": "E", "tasks": [{"name": "fp"}, {"name": "featurePipeline"}]},
     "given twice"),
    ({"name": "n", "engineId": "E", "tasks": [{"name": "train", "parameters": [
        {"key": "a", "value": "1"}, {"key": "a", "value": "2"}]}]}, "'a' is given twice"),
    ({"name": 3, "engineId": "E"}, "name"),
])
def test_bad_mlinstances_are_refused_and_nothing_is_written(registry, caller, body, needle):
    engine = _engine(registry, caller)
    body = {k: (engine["id"] if v == "E" else v) for k, v in body.items()}
    with pytest.raises(ValidationFailed) as info:
        registry.create(MLINSTANCE, caller, body)
    assert needle in info.value.detail
    assert _count(registry, caller, MLINSTANCE) == 0


def test_a_body_must_be_an_object(registry, caller):
    with pytest.raises(BadRequest, match="JSON object"):
        registry.create(ENGINE, caller, ["not", "an", "object"])


def test_unknown_engine_type_is_refused(registry, caller):
    with pytest.raises(ValidationFailed, match="unknown engine type 'Cobol'"):
        registry.create(ENGINE, caller, {"name": "x", "type": "Cobol"})


def test_put_overwrites_but_keeps_created_and_creator(registry, caller):
    engine = _engine(registry, caller)
    inst = _instance(registry, caller, engine["id"])
    other = Caller.local(org=caller.scope.org, sandbox=caller.scope.sandbox, user_id="someone-else")
    new = registry.replace(MLINSTANCE, other, inst["id"], {
        "name": "Renamed", "engineId": engine["id"], "createdBy": {"userId": "forged"},
        "created": "2000-01-01T00:00:00.000Z",
        "tasks": [{"name": "score", "parameters": [{"key": "k", "value": "v"}]}]})
    assert new["created"] == inst["created"] and new["createdBy"] == inst["createdBy"]
    assert new["updated"] > inst["updated"]
    assert new["name"] == "Renamed" and "description" not in new
    assert [t["name"] for t in new["tasks"]] == ["score"]


def test_put_needs_a_valid_engine_and_an_existing_object(registry, caller):
    engine = _engine(registry, caller)
    inst = _instance(registry, caller, engine["id"])
    with pytest.raises(ValidationFailed):
        registry.replace(MLINSTANCE, caller, inst["id"], {"name": "n", "engineId": "missing"})
    assert registry.get(MLINSTANCE, caller, inst["id"])["name"] == "Retail instance"
    with pytest.raises(NotFound):
        registry.replace(MLINSTANCE, caller, "missing", {"name": "n", "engineId": engine["id"]})


def test_secrets_are_masked_and_survive_a_get_put_round_trip(registry, caller):
    engine = _engine(registry, caller)
    inst = _instance(registry, caller, engine["id"], tasks=[{"name": "train", "parameters": [
        {"key": "api_token", "value": "hunter2", "secret": True},
        {"key": "plain", "value": "visible"}]}])
    params = inst["tasks"][0]["parameters"]
    assert params[0]["value"] == SECRET_MASK and params[1]["value"] == "visible"
    fetched = registry.get(MLINSTANCE, caller, inst["id"])
    assert "hunter2" not in str(fetched)
    listed = registry.list(MLINSTANCE, caller, parse_list_query(MLINSTANCE, {})).children
    assert "hunter2" not in str(listed)
    registry.replace(MLINSTANCE, caller, inst["id"], fetched)
    clear = registry.get_unmasked(MLINSTANCE, caller, inst["id"])
    assert clear["tasks"][0]["parameters"][0]["value"] == "hunter2"
    fetched["tasks"][0]["parameters"][0]["value"] = "new-secret"
    registry.replace(MLINSTANCE, caller, inst["id"], fetched)
    clear = registry.get_unmasked(MLINSTANCE, caller, inst["id"])
    assert clear["tasks"][0]["parameters"][0]["value"] == "new-secret"


def test_listing_hides_detail_fields_and_pages(registry, caller):
    engine = _engine(registry, caller)
    ids = [_instance(registry, caller, engine["id"], name=f"i{n:02d}")["id"] for n in range(30)]
    page = registry.list(MLINSTANCE, caller, parse_list_query(MLINSTANCE, {"limit": "10",
                                                                            "start": "25"}))
    assert page.total == 30 and [c["id"] for c in page.children] == ids[25:]
    assert "tasks" not in page.children[0]
    desc = registry.list(MLINSTANCE, caller, parse_list_query(MLINSTANCE, {"orderby": "-name",
                                                                            "limit": "3"}))
    assert [c["name"] for c in desc.children] == ["i29", "i28", "i27"]
    one = registry.list(MLINSTANCE, caller, parse_list_query(MLINSTANCE, {"property": "name==i07"}))
    assert [c["id"] for c in one.children] == [ids[7]]
    first = registry.get(MLINSTANCE, caller, ids[0])["created"]
    later = registry.list(MLINSTANCE, caller, parse_list_query(
        MLINSTANCE, {"property": f"created>{first}", "limit": "100"}))
    assert ids[0] not in [c["id"] for c in later.children]


def test_number_filters_compare_numerically(registry, caller):
    engine = _engine(registry, caller)
    inst = _instance(registry, caller, engine["id"])
    for frame in (5, 30, 100):
        registry.create(MLSERVICE, caller, {
            "name": f"s{frame}", "mlInstanceId": inst["id"], "scoringDataSetId": "ds",
            "scoringTimeframe": frame, "scoringSchedule": {"cron": "@daily"}})
    page = registry.list(MLSERVICE, caller, parse_list_query(
        MLSERVICE, {"property": "scoringTimeframe>10", "orderby": "scoringTimeframe"}))
    assert [c["name"] for c in page.children] == ["s30", "s100"]


def test_soft_delete_cascades_and_deleted_objects_stay_listable(registry, caller):
    engine = _engine(registry, caller)
    inst = _instance(registry, caller, engine["id"])
    exp = registry.create(EXPERIMENT, caller, {"name": "x", "mlInstanceId": inst["id"]})
    run = registry.create_run(caller, exp["id"], {"mode": "train"})
    model = registry.create_model(caller, {"experimentRunId": run["id"]}, b"weights")
    keep = _engine(registry, caller, name="Other")
    registry.delete(ENGINE, caller, engine["id"])
    for kind, id in ((ENGINE, engine["id"]), (MLINSTANCE, inst["id"]), (EXPERIMENT, exp["id"]),
                     (EXPERIMENT_RUN, run["id"]), (MODEL, model["id"])):
        with pytest.raises(NotFound):
            registry.get(kind, caller, id)
    assert registry.get(ENGINE, caller, keep["id"])["name"] == "Other"
    assert _count(registry, caller, MLINSTANCE) == 0
    gone = registry.list(MLINSTANCE, caller, parse_list_query(MLINSTANCE,
                                                              {"property": "deleted==true"}))
    assert [c["id"] for c in gone.children] == [inst["id"]] and gone.children[0]["deleted"] is True
    with pytest.raises(NotFound):
        registry.delete(ENGINE, caller, engine["id"])


def test_bulk_delete_by_engine(registry, caller):
    a, b = _engine(registry, caller), _engine(registry, caller, name="B")
    for _ in range(3):
        _instance(registry, caller, a["id"])
    survivor = _instance(registry, caller, b["id"])
    registry.delete_where(MLINSTANCE, caller, "engineId", a["id"])
    assert [c["id"] for c in registry.list(MLINSTANCE, caller, parse_list_query(
        MLINSTANCE, {})).children] == [survivor["id"]]
    with pytest.raises(NotFound):
        registry.delete_where(MLINSTANCE, caller, "engineId", "no-such-engine")
    with pytest.raises(BadRequest):
        registry.delete_where(MLINSTANCE, caller, "engineId", "")


def test_sandboxes_isolate_objects(registry, caller):
    engine = _engine(registry, caller)
    other = Caller.local(org=caller.scope.org, sandbox="dev", user_id="x")
    with pytest.raises(NotFound):
        registry.get(ENGINE, other, engine["id"])
    with pytest.raises(ValidationFailed):   # an engine of another sandbox is no engine here
        _instance(registry, other, engine["id"])
    assert _count(registry, other, ENGINE) == 0


def test_runs_have_a_status_and_a_state_machine(registry, caller):
    engine = _engine(registry, caller)
    exp = registry.create(EXPERIMENT, caller, {"name": "x", "mlInstanceId": _instance(
        registry, caller, engine["id"])["id"]})
    run = registry.create_run(caller, exp["id"], {"mode": "FP", "tasks": [
        {"name": "fp", "parameters": [{"key": "a", "value": "1"}]}]})
    assert run["mode"] == "featurePipeline" and run["experimentId"] == exp["id"]
    status = registry.run_status(caller, exp["id"], run["id"])
    assert status["experimentRunId"] == run["id"]
    assert status["status"]["tasks"][0]["state"] == "PENDING"
    scope = caller.scope
    registry.transition_run(scope, run["id"], RunStatus.RUNNING)
    with pytest.raises(Conflict, match="RUNNING to PENDING"):
        registry.transition_run(scope, run["id"], RunStatus.PENDING)
    done = registry.transition_run(scope, run["id"], RunStatus.DONE, message="ok")
    task = done["status"]["tasks"][0]
    assert task["state"] == "DONE" and task["started"] <= task["ended"]
    with pytest.raises(Conflict):
        registry.transition_run(scope, run["id"], RunStatus.FAILED)
    assert RunStatus.DONE.is_terminal() and not RunStatus.RETRY.is_terminal()


@pytest.mark.parametrize("body, error", [
    ({"mode": "explode"}, "Unknown run mode 'explode'"),
    ({}, "mode is required"),
    ({"mode": "train", "experimentId": "another"}, "differs from the path"),
])
def test_bad_runs_are_refused(registry, caller, body, error):
    engine = _engine(registry, caller)
    exp = registry.create(EXPERIMENT, caller, {"name": "x", "mlInstanceId": _instance(
        registry, caller, engine["id"])["id"]})
    with pytest.raises(ValidationFailed, match=error):
        registry.create_run(caller, exp["id"], body)
    assert _count(registry, caller, EXPERIMENT_RUN) == 0


def test_runs_are_found_only_under_their_experiment(registry, caller):
    engine = _engine(registry, caller)
    inst = _instance(registry, caller, engine["id"])
    a = registry.create(EXPERIMENT, caller, {"name": "a", "mlInstanceId": inst["id"]})
    b = registry.create(EXPERIMENT, caller, {"name": "b", "mlInstanceId": inst["id"]})
    run = registry.create_run(caller, a["id"], {"mode": "score"})
    with pytest.raises(NotFound):
        registry.get_run(caller, b["id"], run["id"])
    assert registry.list_runs(caller, b["id"], parse_list_query(EXPERIMENT_RUN, {})).total == 0
    assert registry.list_runs(caller, a["id"], parse_list_query(EXPERIMENT_RUN, {})).total == 1


def test_model_artifacts_are_kept_and_served(registry, caller):
    engine = _engine(registry, caller)
    exp = registry.create(EXPERIMENT, caller, {"name": "x", "mlInstanceId": _instance(
        registry, caller, engine["id"])["id"]})
    run = registry.create_run(caller, exp["id"], {"mode": "train"})
    model = registry.create_model(caller, {"experimentRunId": run["id"], "name": "m"}, b"\x00\x01")
    assert model["experimentId"] == exp["id"]
    assert registry.model_artifact(caller, model["id"]).read_bytes() == b"\x00\x01"
    with pytest.raises(ValidationFailed):
        registry.create_model(caller, {"experimentRunId": "nope"}, b"x")


def test_default_metrics(registry):
    assert registry.default_metrics("REGRESSION")["children"][0]["defaultMetrics"][:2] == [
        "MAPE", "MAE"]
    assert len(registry.default_metrics(None)["children"]) >= 2
    with pytest.raises(NotFound, match="Unknown algorithm"):
        registry.default_metrics("astrology")


def test_a_note_changes_the_message_but_not_the_state(registry, caller):
    engine = _engine(registry, caller)
    exp = registry.create(EXPERIMENT, caller, {"name": "x", "mlInstanceId": _instance(
        registry, caller, engine["id"])["id"]})
    run = registry.create_run(caller, exp["id"], {"mode": "train"})
    registry.note_run(caller.scope, run["id"], "still queued: asks 4 CPUs, cluster has 2 free")
    task = registry.run_status(caller, exp["id"], run["id"])["status"]["tasks"][0]
    assert (task["state"], task["message"]) == ("PENDING", "still queued: asks 4 CPUs, cluster has 2 free")
    registry.transition_run(caller.scope, run["id"], RunStatus.ABORTED, message="stopped")
    registry.note_run(caller.scope, run["id"], "late notice")
    task = registry.run_status(caller, exp["id"], run["id"])["status"]["tasks"][0]
    assert task["message"] == "stopped"
