"""MLServices as published, scheduled models: the service-layer rules the scheduler, the API and
`run services` share.

An MLService's state beside its document (store table `serviceState`): paused or not, the
Experiment its scheduled runs go to (its trainingExperimentId / scoringExperimentId when set),
the published Model, and the scheduled training runs whose outcome decides the next publication.
Publication is configured with the service's tags: `publishPolicy` `always` (the default) or
`better` (only a Model at least as good on `publishMetric`, lower is better unless `publishMode`
is `max`, or the metric is one of accuracy, precision, recall, F-score, AUC or R-squared).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from .errors import Conflict, MLRuntimeError, NotFound, ValidationFailed
from .schemas import EXPERIMENT, EXPERIMENT_RUN, MLSERVICE, MODEL, RunStatus, now_timestamp
from .registry import Caller, Registry, Scope

_HIGHER_IS_BETTER = {"accuracy", "precision", "recall", "f-score", "f1", "auc", "r-squared", "r2"}
RECENT_RUNS = 20   # runs a service's status lists


@dataclass
class FirePlan:
    caller: Optional[Caller] = None
    experiment_id: Optional[str] = None
    body: Optional[dict[str, Any]] = None
    skip: Optional[str] = None   # why this fire starts no run


def _param(key: str, value: Any) -> dict[str, str]:
    return {"key": key, "value": str(value)}


def _creator(scope: Scope, doc: dict[str, Any]) -> Caller:
    return Caller(scope, (doc.get("createdBy") or {}).get("userId") or "scheduler")


def metric_value(metrics: Any, name: str) -> Optional[float]:
    for metric in metrics or []:
        if str(metric.get("name", "")).lower() == name.lower():
            try:
                return float(metric.get("value"))
            except (TypeError, ValueError):
                return None
    return None


def lower_is_better(tags: dict[str, Any], metric: str) -> bool:
    mode = str(tags.get("publishMode") or "").lower()
    if mode in ("min", "max"):
        return mode == "min"
    return metric.lower() not in _HIGHER_IS_BETTER


class ServiceDesk:
    """MLService rules over one registry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.schedules = registry.schedules

    # -- reading ----------------------------------------------------------------------------

    def service(self, caller: Caller, service_id: str) -> dict[str, Any]:
        return self.registry.get_unmasked(MLSERVICE, caller, service_id)

    def state(self, scope: Scope, service_id: str) -> dict[str, Any]:
        return self.schedules.service_state(scope, service_id)

    def status(self, scope: Scope, service: dict[str, Any]) -> dict[str, Any]:
        """The read-only `status` of an MLService document (an extension of the contract)."""
        state = self.state(scope, service["id"])
        rows = self.schedules.rows_by_task(scope, service["id"])
        schedules = {}
        for task, field in (("train", "trainingSchedule"), ("score", "scoringSchedule")):
            row = rows.get(task)
            if row is None:   # written a moment ago, not yet synced by a scheduler: as it will be
                row = self._unsynced_row(service, task)
                if row is None:
                    continue
            entry = {"nextFire": row["next_fire"], "lastFire": row["last_fire"],
                     "lastRunId": row["last_run_id"], "fires": row["doc"].get("fires", 0)}
            for key in ("skipped", "skipReason", "error", "caughtUp"):
                if row["doc"].get(key):
                    entry[key] = row["doc"][key]
            schedules[field] = entry
        published = state.get("published")
        out: dict[str, Any] = {"paused": bool(state.get("paused")), "schedules": schedules,
                               "experimentId": state.get("experimentId"),
                               "publishedModel": published, "lastPublication": state.get("decision"),
                               "recentRuns": state.get("runs", [])}
        return out

    @staticmethod
    def _unsynced_row(service: dict[str, Any], task: str) -> Optional[dict[str, Any]]:
        import time

        from .schedules import definitions, iso, next_fire

        for _, found, spec in definitions("mlService", service):
            if found == task:
                try:
                    upcoming = next_fire(spec, time.time())
                except MLRuntimeError:
                    upcoming = None
                return {"next_fire": None if upcoming is None else iso(upcoming),
                        "last_fire": None, "last_run_id": None, "doc": {}}
        return None

    def with_status(self, scope: Scope, service: dict[str, Any]) -> dict[str, Any]:
        return {**service, "status": self.status(scope, service)}

    # -- steering -----------------------------------------------------------------------------

    def _update_state(self, scope: Scope, service_id: str, **fields: Any) -> dict[str, Any]:
        return self.schedules.update_service_state(scope, service_id, **fields)

    def pause(self, caller: Caller, service_id: str) -> dict[str, Any]:
        """Fires of a paused service start no run (they are recorded as skipped)."""
        service = self.service(caller, service_id)
        self._update_state(caller.scope, service_id, paused=True, pausedAt=now_timestamp(),
                           pausedBy=caller.user_id)
        return self.with_status(caller.scope, service)

    def resume(self, caller: Caller, service_id: str) -> dict[str, Any]:
        """The next fire after now runs; fires skipped while paused are not made up."""
        service = self.service(caller, service_id)
        self._update_state(caller.scope, service_id, paused=False, pausedAt=None, pausedBy=None)
        return self.with_status(caller.scope, service)

    def run_now(self, caller: Caller, service_id: str, task: str) -> dict[str, Any]:
        """The schedule of `task` fires at the scheduler's next tick (a running `run serve`), as if
        it were due: through the same path, and its regular next fire is kept."""
        service = self.service(caller, service_id)
        field = {"train": "trainingSchedule", "score": "scoringSchedule"}.get(task)
        if field is None:
            raise ValidationFailed(f"Unknown task {task!r}: an MLService runs train or score")
        from .schedules import RUN_NOW, definitions

        rows = self.schedules.rows_by_task(caller.scope, service_id)
        row = rows.get(task)
        if row is None:
            found = [d for d in definitions("mlService", service) if d[1] == task]
            if not found:
                raise Conflict(f"MLService {service_id} has no {field} with a cron to run")
            schedule_id, _, spec = found[0]   # not yet seen by a scheduler: its row, due now
            self.schedules.put(caller.scope, {
                "id": schedule_id, "owner": "mlService", "owner_id": service_id, "task": task,
                "spec": spec, "next_fire": RUN_NOW, "doc": {"runNow": True}})
        else:
            self.schedules.update(row["id"], next_fire=RUN_NOW,
                                       doc={**row["doc"], "runNow": True})
        return self.with_status(caller.scope, service)

    def publish(self, caller: Caller, service_id: str, model_id: str,
                reason: str) -> dict[str, Any]:
        """Make `model_id` the service's published Model (it must be of the service's
        MLInstance)."""
        service = self.service(caller, service_id)
        model = self.registry.get(MODEL, caller, model_id)
        run = self.registry.find(EXPERIMENT_RUN, caller.scope, model.get("experimentRunId") or "",
                                 deleted=True)
        experiment = run and self.registry.find(EXPERIMENT, caller.scope,
                                                run.get("experimentId") or "", deleted=True)
        if not experiment or experiment.get("mlInstanceId") != service.get("mlInstanceId"):
            raise ValidationFailed(f"Model {model_id} is not a Model of MLService {service_id}'s "
                                   f"MLInstance {service.get('mlInstanceId')}")
        self._set_published(caller.scope, service_id, model, run, reason)
        return self.with_status(caller.scope, service)

    def _set_published(self, scope: Scope, service_id: str, model: dict[str, Any],
                       run: Optional[dict[str, Any]], reason: str) -> None:
        published = {"modelId": model["id"], "experimentRunId": model.get("experimentRunId"),
                     "created": model.get("created"), "publishedAt": now_timestamp(),
                     "metrics": ((run or {}).get("result") or {}).get("metrics") or [],
                     "reason": reason}
        self._update_state(scope, service_id, published=published)

    # -- which Model scores -----------------------------------------------------------------

    def published_model(self, scope: Scope, service_id: str) -> Optional[dict[str, Any]]:
        published = self.state(scope, service_id).get("published") or {}
        return self.registry.find(MODEL, scope, published.get("modelId") or "")

    def published_everywhere(self) -> list[tuple[Scope, str, dict[str, Any]]]:
        """(sandbox, MLService id, Model) of every live MLService with a published Model, in
        every org and sandbox: what `run serve` warms up for online scoring."""
        found = []
        for scope, kind, doc in self.schedules.scheduled_documents():
            if kind == "mlService":
                model = self.published_model(scope, doc["id"])
                if model is not None:
                    found.append((scope, doc["id"], model))
        return found

    def instance_published_model(self, scope: Scope, instance_id: str
                                 ) -> Optional[tuple[dict[str, Any], dict[str, Any]]]:
        """(service, Model) most recently published among the MLInstance's live services."""
        best = None
        for service_id in self.registry.live_ids(MLSERVICE, scope, "mlInstanceId", [instance_id]):
            published = self.state(scope, service_id).get("published") or {}
            if not published or (best and best[2] >= published.get("publishedAt", "")):
                continue
            model = self.published_model(scope, service_id)
            if model is not None:
                best = (service_id, model, published.get("publishedAt", ""))
        if best is None:
            return None
        return self.registry.find(MLSERVICE, scope, best[0], deleted=True), best[1]

    # -- the scheduler's side -----------------------------------------------------------------

    def fire_plan(self, scope: Scope, row: dict[str, Any], due: str, missed: bool) -> FirePlan:
        """The run a due schedule starts: its caller, Experiment and body (or why none)."""
        if row["owner"] == "experiment":
            experiment = self.registry.find(EXPERIMENT, scope, row["owner_id"])
            if experiment is None:
                raise NotFound(f"Experiment {row['owner_id']} is gone")
            return FirePlan(_creator(scope, experiment), experiment["id"], {
                "mode": row["task"],
                "description": f"Scheduled by the Experiment's template.schedule (due {due})"})
        service = self.registry.find(MLSERVICE, scope, row["owner_id"])
        if service is None:
            raise NotFound(f"MLService {row['owner_id']} is gone")
        state = self.state(scope, service["id"])
        if state.get("paused") and not row["doc"].get("runNow"):
            return FirePlan(skip="paused")
        catch_up = str((service.get("tags") or {}).get("catchUp") or "one").lower()
        if missed and catch_up == "skip" and not row["doc"].get("runNow"):
            return FirePlan(skip="missed while no server ran (catchUp: skip)")
        caller = _creator(scope, service)
        experiment_id = self.experiment_for(caller, service, row["task"])
        if row["task"] == "train":
            data, frame = service.get("trainingDataSetId"), service.get("trainingTimeframe")
            params = [_param("trainingDataSetId", data)] if data else []
        else:
            data, frame = service.get("scoringDataSetId"), service.get("scoringTimeframe")
            params = [_param("scoringDataSetId", data)] if data else []
        if frame:
            params.append(_param("timeframe", frame))
        params.append(_param("mlServiceId", service["id"]))
        how = "run now" if row["doc"].get("runNow") else f"due {due}"
        return FirePlan(caller, experiment_id, {
            "mode": row["task"],
            "description": f"Scheduled by MLService {service.get('name')} ({how})",
            "tasks": [{"name": row["task"], "parameters": params}]})

    def experiment_for(self, caller: Caller, service: dict[str, Any], task: str) -> str:
        """The Experiment a service's runs go to: its trainingExperimentId / scoringExperimentId
        when they name a live Experiment, else one made for the service (createdByService)."""
        field = "trainingExperimentId" if task == "train" else "scoringExperimentId"
        named = service.get(field)
        if named:
            if self.registry.find(EXPERIMENT, caller.scope, named) is not None:
                return named
        state = self.state(caller.scope, service["id"])
        own = state.get("experimentId")
        if own and self.registry.find(EXPERIMENT, caller.scope, own) is not None:
            return own
        experiment = self.registry.create(EXPERIMENT, caller, {
            "name": f"{service.get('name')} (MLService)", "mlInstanceId": service["mlInstanceId"],
            "createdByService": True,
            "description": f"The scheduled runs of MLService {service['id']}"})
        self._update_state(caller.scope, service["id"], experimentId=experiment["id"])
        return experiment["id"]

    def fired(self, scope: Scope, row: dict[str, Any], run: dict[str, Any]) -> None:
        """A service's run started: listed in its status; a training run awaits publication."""
        if row["owner"] != "mlService":
            return
        state = self.state(scope, row["owner_id"])
        runs = [{"runId": run["id"], "mode": row["task"], "experimentId": run["experimentId"],
                 "created": run["created"]}, *(state.get("runs") or [])][:RECENT_RUNS]
        fields: dict[str, Any] = {"runs": runs}
        if row["task"] == "train":
            fields["awaitingPublish"] = [*(state.get("awaitingPublish") or []), run["id"]]
        self._update_state(scope, row["owner_id"], **fields)

    def settle_training_runs(self) -> None:
        """Scheduled training runs that ended: a DONE one's Model is published when the policy
        says so; the decision and its reason are kept in the service's status."""
        for scope, service_id, state in self.schedules.services_awaiting():
            waiting = []
            for run_id in state.get("awaitingPublish") or []:
                run_state = self.registry.run_state(scope, run_id)
                if run_state is not None and not run_state.is_terminal():
                    waiting.append(run_id)
                    continue
                if run_state is RunStatus.DONE:
                    try:
                        self._decide(scope, service_id, run_id)
                    except MLRuntimeError as exc:
                        self._update_state(scope, service_id, decision={
                            "runId": run_id, "published": False, "reason": exc.detail})
            with self.registry.transaction():
                current = self.state(scope, service_id)
                done = set(state.get("awaitingPublish") or []) - set(waiting)
                current["awaitingPublish"] = [r for r in current.get("awaitingPublish") or []
                                              if r not in done]
                self.schedules.put_service_state(scope, service_id, current)

    def _decide(self, scope: Scope, service_id: str, run_id: str) -> None:
        service = self.registry.find(MLSERVICE, scope, service_id)
        run = self.registry.find(EXPERIMENT_RUN, scope, run_id, deleted=True)
        if service is None or run is None:
            return
        result = run.get("result") or {}
        model_id = result.get("modelId")
        if not model_id:
            self._update_state(scope, service_id, decision={
                "runId": run_id, "published": False, "reason": "the run registered no Model"})
            return
        model = self.registry.find(MODEL, scope, model_id, deleted=True)
        tags = service.get("tags") or {}
        policy = str(tags.get("publishPolicy") or "always").lower()
        reason = "publishPolicy always"
        if policy == "better":
            metric = str(tags.get("publishMetric") or "")
            if not metric:
                raise ValidationFailed("publishPolicy better needs a publishMetric tag "
                                       "(e.g. MAPE)")
            new = metric_value(result.get("metrics"), metric)
            current = (self.state(scope, service_id).get("published") or {})
            old = metric_value(current.get("metrics"), metric)
            if new is None:
                self._update_state(scope, service_id, decision={
                    "runId": run_id, "modelId": model_id, "published": False,
                    "reason": f"the run reported no {metric}"})
                return
            if old is not None and self.published_model(scope, service_id) is not None:
                low = lower_is_better(tags, metric)
                if (new > old) if low else (new < old):
                    self._update_state(scope, service_id, decision={
                        "runId": run_id, "modelId": model_id, "published": False,
                        "reason": f"{metric} {new:.6g} is worse than the published {old:.6g}"})
                    return
                reason = f"{metric} {new:.6g} is at least as good as the published {old:.6g}"
            else:
                reason = f"{metric} {new:.6g}; no Model was published"
        self._set_published(scope, service_id, model, run, reason)
        self._update_state(scope, service_id, decision={
            "runId": run_id, "modelId": model_id, "published": True, "reason": reason})

