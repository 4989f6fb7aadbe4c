"""The run lifecycle exists once: no face (the CLI, the API, sweeps, the scheduler, the run
targets) prepares, creates or executes a run itself, they hand a RunRequest to runtime.runs; and
an API run's body is validated once and its claim on the host checked once (counted in process,
on a real app and a real noop worker)."""
from __future__ import annotations

import ast
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ROOT / "runtime"
FACES = sorted([*(RUNTIME / "cli").rglob("*.py"), *(RUNTIME / "api").rglob("*.py"),
                RUNTIME / "sweep.py", RUNTIME / "scheduler.py", RUNTIME / "run_targets.py"])
# The steps of a run's lifecycle, which only runtime/runs/ calls.
LIFECYCLE_STEPS = {"prepare", "create_run", "execute", "admit", "submit_background"}


def _calls(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in LIFECYCLE_STEPS:
                found.append((node.lineno, name))
    return found


def test_no_face_sequences_a_run_itself():
    assert len(FACES) > 10   # the walk found the faces
    offenders = [f"{path.relative_to(ROOT)}:{line} calls {name}()"
                 for path in FACES for line, name in _calls(path)]
    assert offenders == [], "a face builds a RunRequest and calls RunExecutor.run/start/preview"


@pytest.fixture
def counted(monkeypatch):
    """Calls of the run document's validation and of the capacity check, in this process."""
    import runtime.capacity as capacity
    from runtime.registry.documents import Documents
    from runtime.schemas import EXPERIMENT_RUN

    counts = {"validate": 0, "check_fits": 0}
    validate, check_fits = Documents.validate, capacity.check_fits

    def counting_validate(self, kind, body):
        if kind is EXPERIMENT_RUN:
            counts["validate"] += 1
        return validate(self, kind, body)

    def counting_check_fits(demand, cap):
        counts["check_fits"] += 1
        return check_fits(demand, cap)

    monkeypatch.setattr(Documents, "validate", counting_validate)
    monkeypatch.setattr(capacity, "check_fits", counting_check_fits)
    return counts


def test_an_api_run_is_validated_once_and_its_capacity_checked_once(home, tmp_path, counted):
    from fastapi.testclient import TestClient

    from runtime.api.app import ServerSettings, create_app

    (tmp_path / "train.csv").write_text("x\n1\n2\n")
    app = create_app(ServerSettings(home=home, warm="cold", schedule_runs=False))
    with TestClient(app) as client:
        base = "/data/sensei"
        engine = client.post(f"{base}/engines", json={
            "name": "noop", "type": "Python",
            "artifacts": {"default": {"image": {"location": "noop"}}}}).json()
        instance = client.post(f"{base}/mlInstances", json={
            "name": "noop", "engineId": engine["id"], "tasks": [{"name": "train", "parameters": [
                {"key": "trainingDataSetId", "value": str(tmp_path / "train.csv")}]}]}).json()
        experiment = client.post(f"{base}/experiments", json={
            "name": "x", "mlInstanceId": instance["id"]}).json()
        before = dict(counted)
        created = client.post(f"{base}/experiments/{experiment['id']}/runs",
                              json={"mode": "train"})
        assert created.status_code == 201, created.text
        run_id = created.json()["id"]
        deadline, state = time.monotonic() + 60, None
        while time.monotonic() < deadline:
            status = client.get(f"{base}/experiments/{experiment['id']}/runs/{run_id}/status")
            state = status.json()["status"]["tasks"][0]["state"]
            if state in ("DONE", "FAILED", "ABORTED"):
                break
            time.sleep(0.1)
        assert state == "DONE", status.json()
    assert counted["validate"] - before["validate"] == 1
    assert counted["check_fits"] - before["check_fits"] == 1


def test_a_cli_run_is_validated_once_and_its_capacity_checked_once(registry, caller, tmp_path,
                                                                   counted):
    from runtime.runs import RunExecutor, RunRequest, default_experiment
    from runtime.schemas import ENGINE, EXPERIMENT, MLINSTANCE

    (tmp_path / "train.csv").write_text("x\n1\n2\n")
    engine = registry.create(ENGINE, caller, {
        "name": "noop", "type": "Python", "artifacts": {"default": {"image": {"location": "noop"}}}})
    instance = registry.create(MLINSTANCE, caller, {"name": "noop", "engineId": engine["id"]})
    registry.create(EXPERIMENT, caller, {"name": "x", "mlInstanceId": instance["id"]})
    experiment = default_experiment(registry, caller, instance)
    before = dict(counted)
    summary = RunExecutor(registry).run(caller, RunRequest(
        experiment_id=experiment["id"], mode="train",
        overrides={"trainingDataSetId": str(tmp_path / "train.csv"), "echo": "hello"}))
    assert summary["state"] == "DONE", summary
    assert counted["validate"] - before["validate"] == 1
    assert counted["check_fits"] - before["check_fits"] == 1
