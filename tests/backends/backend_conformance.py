"""What every backend must do, whatever it runs on. A backend's tests subclass BackendConformance
and provide the `backend` and `plan` fixtures (Hydra's launcher test suite does the same)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest

from runtime.backends import Backend, Outcome, RunHandle, WorkerSpec
from runtime.schemas import RunStatus
from waiting import until

HERE = Path(__file__).resolve().parent


def small_table(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "rows.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": [0, 1, 0]}).to_csv(path, index=False)
    return path


def make_spec(tmp_path: Path, engine: str, mode: str = "train", *, run_id: str = "run-1",
              values: dict | None = None, **fields) -> WorkerSpec:
    if values is None:
        values = {"trainingDataSetId": str(small_table(tmp_path))}
    return WorkerSpec(run_id=run_id, engine=engine, mode=mode, values=values,
                      run_dir=tmp_path / "runs" / run_id, **fields)


class BackendConformance:
    """Subclasses provide fixtures `backend` (a Backend) and `plan` (a Plan whose env lets the
    worker import `failing_engines` from this folder)."""

    def submit(self, backend: Backend, plan, spec: WorkerSpec, **kwargs) -> RunHandle:
        return backend.submit(spec=spec, plan=plan, log_path=Path(spec.run_dir) / "run.log", **kwargs)

    def test_noop_train_is_done_with_result_and_metrics(self, backend, plan, tmp_path):
        spec = make_spec(tmp_path, "noop", values={"trainingDataSetId": str(small_table(tmp_path)),
                                                   "echo": "hello"})
        outcome = self.submit(backend, plan, spec).wait(timeout=60)
        assert isinstance(outcome, Outcome)
        assert outcome.state is RunStatus.DONE, outcome.log_tail
        assert outcome.reason is None and outcome.returncode == 0
        written = json.loads((spec.run_dir / "result.json").read_text())
        assert written == outcome.result
        assert written["state"] == "DONE" and written["mode"] == "train" and written["error"] is None
        assert {"name": "rows", "value": 3.0, "valueType": "double"} in written["metrics"]
        model_dir = Path(written["model_dir"])
        assert json.loads((model_dir / "model.json").read_text())["echo"] == "hello"
        assert {"load_data", "feature_pipeline", "train", "save_model", "evaluate"} <= set(written["durations_s"])
        assert "DONE" in outcome.log_tail  # the worker's closing summary

    def test_engine_exception_is_failed_with_message_and_log_tail(self, backend, plan, tmp_path):
        spec = make_spec(tmp_path, "failing_engines:RaisingEngine")
        outcome = self.submit(backend, plan, spec).wait(timeout=60)
        assert outcome.state is RunStatus.FAILED
        assert outcome.reason == "ValueError: column 'weeklySales' is missing"
        assert "about to fail: checking columns" in outcome.log_tail
        assert "Traceback" in outcome.log_tail
        error = outcome.result["error"]
        assert error["type"] == "ValueError" and "failing_engines.py" in error["traceback"]

    def test_config_error_names_the_missing_data_set(self, backend, plan, tmp_path):
        missing = tmp_path / "nowhere" / "train.parquet"
        spec = make_spec(tmp_path, "noop", values={"trainingDataSetId": str(missing)})
        outcome = self.submit(backend, plan, spec).wait(timeout=60)
        assert outcome.state is RunStatus.FAILED
        assert "trainingDataSetId" in outcome.reason and str(missing) in outcome.reason

    def test_cancel_aborts_and_status_follows(self, backend, plan, tmp_path):
        spec = make_spec(tmp_path, "noop", values={"trainingDataSetId": str(small_table(tmp_path)),
                                                   "sleep_ms": 60_000})
        handle = self.submit(backend, plan, spec)
        assert handle.status() is RunStatus.RUNNING
        with pytest.raises(TimeoutError):
            handle.wait(timeout=0.2)
        handle.cancel()
        outcome = handle.wait(timeout=30)
        assert outcome.state is RunStatus.ABORTED and "cancel" in outcome.reason
        assert handle.status() is RunStatus.ABORTED
        handle.cancel()  # a second cancel is harmless

    def test_echo_streams_the_log(self, backend, plan, tmp_path):
        echo = io.StringIO()
        spec = make_spec(tmp_path, "noop")
        outcome = self.submit(backend, plan, spec, echo=echo).wait(timeout=60)
        assert outcome.state is RunStatus.DONE
        assert "stage train" in echo.getvalue()
        assert echo.getvalue() == (Path(spec.run_dir) / "run.log").read_text()

    def test_status_reaches_done_without_wait(self, backend, plan, tmp_path):
        handle = self.submit(backend, plan, make_spec(tmp_path, "noop"))
        until(lambda: handle.status().is_terminal(), what="a terminal status")
        assert handle.status() is RunStatus.DONE
