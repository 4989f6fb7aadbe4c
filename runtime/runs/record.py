"""Recording how a run ended, once: its state (with the reason and the log's tail), its result
on the run's document, its per-step metrics, and for a DONE run its Model and Insight, written in
one transaction with the state (the Model and DONE together, or neither).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Optional

from ..errors import Conflict, MLRuntimeError
from ..schemas import INSIGHT, RunStatus
from ..registry import Caller, Registry
from ..tasks import TRAIN
from .prepare import Prepared

log = logging.getLogger("runtime.runs")

SERVER_GONE = "the server stopped while the run was running; worker exited without a result"


def caller_of(scope: Any, run: dict[str, Any]) -> Caller:
    """The caller a run was made by (who its Model and Insight are recorded for)."""
    return Caller(scope, (run.get("createdBy") or {}).get("userId") or "local")


class Recorder:
    """Records the runs of one registry. `release(run_id)` frees a run's place in the ledger;
    `from_record(caller, run)` rebuilds what recording needs when the preparing process is gone."""

    def __init__(self, registry: Registry, *, release: Callable[[str], None],
                 from_record: Callable[[Caller, dict[str, Any]], Prepared]) -> None:
        self.registry = registry
        self._release = release
        self._from_record = from_record

    def state(self, scope: Any, run_id: str) -> Optional[RunStatus]:
        return self.registry.run_state(scope, run_id)

    def record(self, caller: Caller, run: dict[str, Any], prepared: Prepared, outcome: Any,
                log_path: Path) -> dict[str, Any]:
        reg, scope, run_id = self.registry, caller.scope, run["id"]
        result = outcome.result or {}
        self._ingest_metrics(scope, run_id)
        summary: dict[str, Any] = {
            "runId": run_id, "experimentId": run["experimentId"], "mode": prepared.mode,
            "state": outcome.state.value, "metrics": result.get("metrics") or [],
            "modelId": None, "output": result.get("output"), "reason": outcome.reason,
            "durations_s": result.get("durations_s") or {}, "log": str(log_path)}
        if result.get("spark"):   # the effective Spark configuration the worker read back
            summary["spark"] = result["spark"]
        if result.get("system"):   # the run's CPU, memory and GPU use (runtime.sysmetrics)
            summary["system"] = result["system"]
        shared = self._share_model(prepared, outcome)
        with reg.transaction():   # the Model and DONE together, or neither
            current = self.state(scope, run_id)
            if current is not None and current.is_terminal():
                # Another process recorded it (a cancel of an unwatched run): that record stands.
                summary.update(state=current.value,
                               reason=summary["reason"] or "recorded elsewhere")
                return summary
            summary = self._record_locked(caller, run, prepared, outcome, summary, current, shared)
        self._share_log(run_id, log_path)
        return summary

    def _share_log(self, run_id: str, log_path: Path) -> None:
        """The ended run's log, where every server of the registry can serve it (a shared folder
        or bucket; the home's own folder serves it in place). A failure here is logged, not
        raised: the run's own outcome stands."""
        from ..artifact_store import location_for

        try:
            location_for(self.registry.home).put_run_log(run_id, Path(log_path))
        except Exception:
            log.warning("Run %s: its log could not be put to the artifact location", run_id,
                        exc_info=True)

    def _share_model(self, prepared: Prepared, outcome: Any) -> Optional[str] | MLRuntimeError:
        """A trained Model put to a bucket artifact location before the write transaction (an
        upload may take long), or why it could not be: the run then fails saying so."""
        model_dir = (outcome.result or {}).get("model_dir")
        if outcome.state is not RunStatus.DONE or prepared.mode != TRAIN or not model_dir:
            return None
        try:
            return self.registry.share_model(Path(model_dir))
        except MLRuntimeError as exc:
            return exc

    def _record_locked(self, caller: Caller, run: dict[str, Any], prepared: Prepared,
                       outcome: Any, summary: dict[str, Any], current: Optional[RunStatus],
                       shared: Optional[str] | MLRuntimeError = None) -> dict[str, Any]:
        reg, scope, run_id = self.registry, caller.scope, run["id"]
        result = outcome.result or {}
        try:
            if outcome.state is RunStatus.DONE:
                if current is RunStatus.PENDING:   # a queueing backend's job seen only at its end
                    reg.transition_run(scope, run_id, RunStatus.RUNNING)
                if isinstance(shared, MLRuntimeError):
                    raise shared
                if prepared.mode == TRAIN and result.get("model_dir"):
                    model = self._register_model(caller, run, prepared, Path(result["model_dir"]),
                                                 digest=result.get("model_digest"), shared=shared)
                    summary["modelId"] = model["id"]
                elif prepared.model is not None:
                    summary["modelId"] = prepared.model["id"]
                if summary["metrics"]:
                    self._record_insight(caller, run, prepared, summary)
        except MLRuntimeError as exc:
            summary.update(state=RunStatus.FAILED.value, reason=exc.detail)
            outcome_state = RunStatus.FAILED
        else:
            outcome_state = outcome.state
        message = {RunStatus.DONE: "Run completed"}.get(outcome_state, summary["reason"] or "")
        if result.get("warnings"):   # e.g. no validation metrics, and why
            summary["warnings"] = list(result["warnings"])
            if outcome_state is RunStatus.DONE:
                message = "Run completed with warnings: " + "; ".join(summary["warnings"])
        reg.transition_run(scope, run_id, outcome_state, message=message,
                           logs=outcome.log_tail if outcome_state is not RunStatus.DONE else None)
        reg.annotate_run(scope, run_id, {"result": {k: summary[k] for k in (
            "state", "metrics", "modelId", "output", "durations_s", "spark", "system", "warnings")
            if k in summary}})
        if outcome_state is RunStatus.ABORTED:
            from ..supervisor import remove_partial_artifacts

            remove_partial_artifacts(reg.home.runs / run_id)
        return summary

    def _ingest_metrics(self, scope: Any, run_id: str) -> None:
        """The per-step metrics the worker left in the run folder, into the registry. A failure
        here is logged, not raised: the run's own outcome stands."""
        from ..run_views import RunViews

        try:
            RunViews(self.registry).ingest(scope, run_id)
        except Exception:
            log.warning("Run %s: its per-step metrics could not be recorded", run_id, exc_info=True)

    def _register_model(self, caller: Caller, run: dict[str, Any], prepared: Prepared,
                        model_dir: Path, digest: Optional[str] = None,
                        shared: Optional[str] = None) -> dict[str, Any]:
        return self.registry.register_model(caller, {
            "name": prepared.instance.get("name"),
            "description": prepared.instance.get("description") or "",
            "experimentId": run["experimentId"], "experimentRunId": run["id"],
            "state": ["trained"]}, model_dir, digest=digest, shared=shared)

    def _record_insight(self, caller: Caller, run: dict[str, Any], prepared: Prepared,
                        summary: dict[str, Any]) -> None:
        self.registry.create(INSIGHT, caller, {
            "context": {"experimentId": run["experimentId"], "experimentRunId": run["id"],
                        "mlInstanceId": prepared.instance["id"],
                        "engineId": prepared.engine_doc["id"],
                        **({"modelId": summary["modelId"]} if summary["modelId"] else {})},
            "metrics": [{"name": m["name"], "value": m["value"],
                         "valueType": m.get("valueType", "double")} for m in summary["metrics"]]})

    def fail_unless_ended(self, caller: Caller, run_id: str, reason: str,
                           state_to: RunStatus = RunStatus.FAILED) -> None:
        state = self.state(caller.scope, run_id)
        if state is not None and not state.is_terminal():
            try:
                self.registry.transition_run(caller.scope, run_id, state_to, message=reason)
            except Conflict:
                pass
        self._release(run_id)

    def record_unwatched(self, scope: Any, run_id: str,
                         outcome: Any = None) -> Optional[dict[str, Any]]:
        """Record a run whose worker ended while no process watched it, from its result file."""
        from ..backends import judge
        from ..schemas import EXPERIMENT_RUN

        reg = self.registry
        run = reg.find(EXPERIMENT_RUN, scope, run_id, deleted=True)
        if run is None:
            return None
        caller = caller_of(scope, run)
        run_dir = reg.home.runs / run_id
        log_path = run_dir / "worker.log"
        if outcome is None:
            outcome = judge(run_dir, log_path, gone=SERVER_GONE)
        try:
            prepared = self._from_record(caller, run)
        except MLRuntimeError as exc:   # its Experiment or MLInstance was deleted meanwhile
            self.fail_unless_ended(caller, run_id, f"{outcome.reason or 'ended'}; cannot record "
                                                   f"its result: {exc.detail}")
            return None
        try:
            return self.record(caller, run, prepared, outcome, log_path)
        finally:
            self._release(run_id)
