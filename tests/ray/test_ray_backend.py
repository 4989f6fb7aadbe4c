"""The ray backend against a real Ray head: the conformance suite, then what only Ray does."""
from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from backend_conformance import HERE as BACKENDS_TESTS, BackendConformance, make_spec, small_table
from runtime.backends import load_backend
from runtime.backends.ray import (BUNDLE_BEGIN, RAY_STATES, RayBackend, make_bundle,
                                  restore_bundle, split_bundle)
from runtime.dispatch import HostInfo, plan as make_plan
from runtime.resources import ResourceRequest
from runtime.schemas import RunStatus


@pytest.fixture
def plan():
    base = make_plan(engine_kind="python", resources=ResourceRequest(cpus=1),
                     host=HostInfo(cpu_count=1), backend="ray")
    # failing_engines lives beside the conformance suite: the job imports it from there
    return base.model_copy(update={"env": {**base.env, "PYTHONPATH": str(BACKENDS_TESTS)}})


@pytest.fixture
def backend(ray_address):
    return RayBackend(address=ray_address, resources=ResourceRequest(cpus=1), poll_s=0.05)


class TestRayBackendConformance(BackendConformance):
    def test_cancel_aborts_and_status_follows(self, backend, plan, tmp_path):
        # As the conformance test, except that a queued job may still be PENDING at first.
        spec = make_spec(tmp_path, "noop", values={"trainingDataSetId": str(small_table(tmp_path)),
                                                   "sleep_ms": 60_000})
        handle = self.submit(backend, plan, spec)
        assert handle.status() in (RunStatus.PENDING, RunStatus.RUNNING)
        with pytest.raises(TimeoutError):
            handle.wait(timeout=0.2)
        handle.cancel()
        outcome = handle.wait(timeout=30)
        assert outcome.state is RunStatus.ABORTED and "cancel" in outcome.reason
        assert handle.status() is RunStatus.ABORTED
        handle.cancel()


def test_state_table_is_the_issue_s():
    assert {k: v.value for k, v in RAY_STATES.items()} == {
        "PENDING": "PENDING", "RUNNING": "RUNNING", "SUCCEEDED": "DONE", "FAILED": "FAILED",
        "STOPPED": "ABORTED"}


def test_registered_under_the_backends_entry_point():
    assert isinstance(load_backend("ray"), RayBackend)


def test_artifacts_come_back_in_the_log_and_stay_out_of_it(backend, plan, tmp_path):
    spec = make_spec(tmp_path, "noop", values={"trainingDataSetId": str(small_table(tmp_path)),
                                               "echo": "returned"})
    handle = backend.submit(spec=spec, plan=plan, log_path=spec.run_dir / "worker.log")
    outcome = handle.wait(timeout=60)
    assert outcome.state is RunStatus.DONE, outcome.log_tail
    model_dir = Path(outcome.result["model_dir"])
    assert model_dir.parent == spec.run_dir  # a local path, not the node's
    assert json.loads((model_dir / "model.json").read_text())["echo"] == "returned"
    log = (spec.run_dir / "worker.log").read_text()
    assert BUNDLE_BEGIN not in log and "stage train" in log
    assert handle.record()["submissionId"] == handle.submission_id


def test_shared_artifacts_are_written_in_place(ray_address, plan, tmp_path):
    backend = RayBackend(address=ray_address, artifacts="shared", poll_s=0.05)
    spec = make_spec(tmp_path, "noop")
    outcome = backend.submit(spec=spec, plan=plan, log_path=spec.run_dir / "worker.log").wait(60)
    assert outcome.state is RunStatus.DONE, outcome.log_tail
    assert Path(outcome.result["model_dir"]) == spec.run_dir.resolve() / "model"
    assert (spec.run_dir / "model" / "model.json").is_file()


def test_pending_job_says_what_it_asked_and_what_is_free(ray_address, plan, tmp_path):
    notices: list[str] = []
    backend = RayBackend(address=ray_address, resources=ResourceRequest(cpus=64),
                         notify=notices.append, pending_notice_s=0.5, poll_s=0.05,
                         stop_grace_s=1.0)
    spec = make_spec(tmp_path, "noop")
    handle = backend.submit(spec=spec, plan=plan, log_path=spec.run_dir / "worker.log")
    with pytest.raises(TimeoutError):
        handle.wait(timeout=2.0)
    assert handle.status() is RunStatus.PENDING
    notice = next(n for n in notices if "still PENDING" in n)
    assert "asks for 64 CPU" in notice and "of 2 CPU" in notice, notice
    handle.cancel()
    assert handle.wait(timeout=30).state is RunStatus.ABORTED


def test_bundle_round_trip_rewrites_paths(tmp_path):
    remote = tmp_path / "remote"
    (remote / "model").mkdir(parents=True)
    (remote / "model" / "m.json").write_text("{}")
    (remote / "spec.json").write_text('{"secret": "x"}')
    outside = tmp_path / "elsewhere" / "scores.csv"
    outside.parent.mkdir()
    outside.write_text("a\n1\n")
    result = {"state": "DONE", "model_dir": str(remote / "model"), "output": str(outside)}
    (remote / "result.json").write_text(json.dumps(result))
    data = make_bundle(remote, result)
    outside.unlink()
    local = tmp_path / "local"
    restored = restore_bundle(data, local)
    assert restored["model_dir"] == str(local / "model")
    assert outside.read_text() == "a\n1\n" and restored["output"] == str(outside)
    assert not (local / "spec.json").exists()  # secrets never travel back


def test_split_bundle_leaves_the_log_around_it():
    import base64, hashlib
    data = b"payload"
    text = (f"before\n{BUNDLE_BEGIN} {len(data)} {hashlib.sha256(data).hexdigest()}\n"
            f"{base64.b64encode(data).decode()}\n@@mlinstance-runtime-artifacts end\nafter\n")
    assert split_bundle(text) == ("before\nafter\n", data)
    assert split_bundle("partial\n" + BUNDLE_BEGIN + " 1 x\nAAA")[1] is None
