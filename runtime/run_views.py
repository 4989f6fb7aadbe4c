"""The runs view's service layer: the runs table, one run, a comparison, metric series, log chunks.

Shared by the web page's JSON routes (runtime/web) and anything else that wants the same answers.
The table is one indexed query (store/sqlite_runs.py); per-step metrics reach the registry when
the host ingests a run's metrics.jsonl (`ingest`), never from the worker.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

from .errors import BadRequest, NotFound
from .listing import Filter, ListQuery
from .metrics_series import METRICS_FILE, SYSTEM_FILE, read_points, read_progress
from .schemas import EXPERIMENT_RUN, MODEL, RunStatus
from .registry import Caller, Registry, mask_secrets
from .store import Scope

log = logging.getLogger("runtime.run_views")

MAX_LIMIT = 200
MAX_COMPARE = 10
MAX_COMPARE_EXPERIMENT = 50
_SORT_COLUMNS = {"created": "created", "mode": "mode", "state": "state", "started": "started",
                 "ended": "ended", "duration": "duration_s", "duration_s": "duration_s"}
_AUTO_PARAM_COLUMNS = 6
TABLE_SYSTEM_COLUMNS = ("peak_memory_mb", "mean_cpu_percent", "mean_gpu_percent")
_LOG_CHUNK = 256 * 1024


@dataclass(frozen=True)
class TableQuery:
    """What the runs table asks for; `sort` is a column (`created`, `state`, `duration`, ...),
    `metric.NAME` (final value), `best.NAME` (best step) or `param.KEY`, `-` for descending."""

    filters: tuple[tuple[str, str], ...] = ()
    sort: str = "-created"
    start: int = 0
    limit: int = 50
    params: Optional[tuple[str, ...]] = None
    search: str = ""   # the search language (runtime.run_search): metrics.MAPE < 0.05 and ...

    @classmethod
    def parse(cls, query: dict[str, str]) -> "TableQuery":
        from .registry import RunIndex

        FILTER_COLUMNS = RunIndex.filter_columns()
        unknown = sorted(set(query) - {*FILTER_COLUMNS, "sort", "start", "limit", "params", "filter"})
        if unknown:
            raise BadRequest(f"Unknown query parameter(s) {', '.join(unknown)}; the runs table takes "
                             f"{', '.join(FILTER_COLUMNS)}, filter, sort, start, limit, params")
        filters = tuple((k, query[k]) for k in FILTER_COLUMNS if query.get(k))
        try:
            start = int(query.get("start") or 0)
            limit = int(query.get("limit") or 50)
        except ValueError:
            raise BadRequest("start and limit must be integers") from None
        if start < 0 or not 1 <= limit <= MAX_LIMIT:
            raise BadRequest(f"start must be >= 0 and limit 1..{MAX_LIMIT}")
        params = query.get("params")
        return cls(filters=filters, sort=query.get("sort") or "-created", start=start, limit=limit,
                   params=tuple(p for p in params.split(",") if p) if params is not None else None,
                   search=(query.get("filter") or "").strip())

    def sort_spec(self) -> tuple[Optional[str], str, bool]:
        descending = self.sort.startswith("-")
        field = self.sort.lstrip("-+")
        kind, dot, key = field.partition(".")
        if dot and kind in ("metric", "best", "param", "system") and key:
            return kind, key, descending
        if field in _SORT_COLUMNS:
            return None, _SORT_COLUMNS[field], descending
        raise BadRequest(f"Cannot sort by {field!r}: use one of {', '.join(_SORT_COLUMNS)}, "
                         "metric.NAME, best.NAME, param.KEY or system.NAME")


class RunViews:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def _index(self):
        return self.registry.runs_index()

    # -- per-step metrics ----------------------------------------------------------------------

    def ingest(self, scope: Scope, run_id: str) -> int:
        """Reads what the run's worker appended to metrics.jsonl (and its system metrics to
        system.jsonl) since the last read into the registry; returns the number of points. Safe
        to call from any process, any time."""
        added = 0
        for name, source in ((METRICS_FILE, ""), (SYSTEM_FILE, "system")):
            path = self.registry.home.runs / run_id / name
            if not path.exists():
                continue

            def read(offset: int, path=path) -> tuple[list[dict[str, Any]], int]:
                points, new_offset, bad = read_points(path, offset)
                if bad:
                    log.warning("run %s: %d malformed line(s) in %s skipped", run_id, bad, path)
                return points, new_offset

            added += self._index().add_points(run_id, read, source=source)
        return added

    def _live_run(self, caller: Caller, run_id: str) -> dict[str, Any]:
        doc = self.registry.find(EXPERIMENT_RUN, caller.scope, run_id)
        if doc is None:
            raise NotFound(f"Experiment run {run_id!r} not found")
        return doc

    def _state(self, caller: Caller, run_id: str) -> Optional[str]:
        state = self.registry.run_state(caller.scope, run_id)
        return state.value if state is not None else None

    def series(self, caller: Caller, run_id: str) -> dict[str, Any]:
        self._live_run(caller, run_id)
        state = self._state(caller, run_id)
        if state and not RunStatus(state).is_terminal():
            self.ingest(caller.scope, run_id)
        return {"runId": run_id, "state": state,
                "series": self._index().series([run_id])[run_id]}

    # -- the table -----------------------------------------------------------------------------

    def table(self, caller: Caller, query: TableQuery) -> dict[str, Any]:
        from .run_search import compile_search

        kind, key, descending = query.sort_spec()
        search = compile_search(query.search) if query.search else None
        index = self._index()
        rows, total = index.table_page(caller.scope, dict(query.filters), kind, key, descending,
                                       query.start, query.limit, search)
        ids = [r["id"] for r in rows]
        values = index.values_of(ids)
        engines = index.names_of("engines", (r["engineId"] for r in rows))
        instances = index.names_of("mlInstances", (r["mlInstanceId"] for r in rows))
        experiments = index.names_of("experiments", (r["experimentId"] for r in rows))
        metric_names = sorted({m for v in values.values() for m in v["metric"]})
        if query.params is not None:
            param_cols = list(query.params)
        else:   # the parameters that differ between the runs shown
            keys = sorted({p for v in values.values() for p in v["param"]})
            param_cols = [k for k in keys
                          if len({repr(values[i]["param"].get(k)) for i in ids}) > 1][:_AUTO_PARAM_COLUMNS]
        if kind == "param" and key not in param_cols:
            param_cols.append(key)
        # The summaries worth a column, when some run of the page has them (runtime.sysmetrics).
        shown = {k for v in values.values() for k in v["system"]}
        system_cols = [k for k in TABLE_SYSTEM_COLUMNS if k in shown]
        if kind == "system" and key not in system_cols:
            system_cols.append(key)
        out_rows = []
        for row in rows:
            v = values[row["id"]]
            out_rows.append({
                **row,
                "engine": {"id": row["engineId"], "name": engines.get(row["engineId"])},
                "mlInstance": {"id": row["mlInstanceId"], "name": instances.get(row["mlInstanceId"])},
                "experiment": {"id": row["experimentId"], "name": experiments.get(row["experimentId"])},
                "metrics": v["metric"], "best": v["best"],
                "params": {k: v["param"].get(k) for k in param_cols},
                "system": {k: v["system"].get(k) for k in system_cols},
            })
        return {"total": total, "start": query.start, "limit": query.limit, "sort": query.sort,
                "filters": dict(query.filters), "filter": query.search,
                "columns": {"metrics": metric_names, "params": param_cols, "system": system_cols},
                "runs": out_rows}

    def system_values(self, run_id: str) -> dict[str, Any]:
        """The run's system metrics summary as the runs index keeps it (numbers only)."""
        return self._index().values_of([run_id])[run_id]["system"]

    def scopes(self, caller: Caller) -> dict[str, Any]:
        """The orgs and sandboxes that hold objects (most runs first), and the caller's own."""
        return {"current": {"org": caller.scope.org, "sandbox": caller.scope.sandbox},
                "scopes": self._index().scopes_in_use()}

    def choices(self, caller: Caller) -> dict[str, Any]:
        """What the table's filters and sort menu offer in this sandbox."""
        index = self._index()
        return {**index.scope_choices(caller.scope), "keys": index.value_keys(caller.scope),
                "states": [s.value for s in RunStatus], "modes": ["train", "score", "featurePipeline"]}

    # -- one run and a comparison ----------------------------------------------------------------

    def detail(self, caller: Caller, run_id: str) -> dict[str, Any]:
        doc = mask_secrets(self._live_run(caller, run_id))
        status = self.registry.status_document(caller.scope, run_id)
        task = status.task if status is not None else None
        state = task.state.value if task is not None else None
        running = task is not None and not task.state.is_terminal()
        if running:
            self.ingest(caller.scope, run_id)
        index = self._index()
        engine_id, instance_id = index.owners_of(run_id)
        names = {"engine": index.names_of("engines", [engine_id]).get(engine_id),
                 "mlInstance": index.names_of("mlInstances", [instance_id]).get(instance_id),
                 "experiment": index.names_of("experiments", [doc.get("experimentId")]).get(
                     doc.get("experimentId"))}
        runtime = doc.get("runtime") or {}
        result = doc.get("result") or {}
        models = self.registry.list(MODEL, caller, ListQuery(
            filters=(Filter("deleted", "==", False, "bool"),
                     Filter("experimentRunId", "==", run_id, "str")),
            order=(("created", True),), limit=10)).children
        model_id = result.get("modelId") or runtime.get("modelId")
        base = f"/data/sensei/experiments/{doc.get('experimentId')}/runs/{run_id}"
        return {
            "id": run_id, "mode": doc.get("mode"), "created": doc.get("created"),
            "createdBy": doc.get("createdBy"),
            "experiment": {"id": doc.get("experimentId"), "name": names["experiment"]},
            "mlInstance": {"id": instance_id, "name": names["mlInstance"]},
            "engine": {"id": engine_id, "name": names["engine"], "plugin": runtime.get("engine")},
            "state": state, **{k: getattr(task, k) if task is not None else None
                               for k in ("message", "started", "ended", "logs")},
            "durations_s": result.get("durations_s") or {},
            "parameters": _parameters(runtime.get("resolved") or {}),
            "resources": (runtime.get("resolved") or {}).get("resources"),
            "resourceSources": (runtime.get("resolved") or {}).get("resource_provenance"),
            "plan": runtime.get("plan"), "spark": runtime.get("spark") or result.get("spark"),
            "metrics": result.get("metrics") or [],
            "system": system_summary(result, runtime, running),
            "series": index.series([run_id])[run_id],
            "progress": read_progress(self.registry.home.runs / run_id) if running else None,
            "models": [{"id": m["id"], "name": m.get("name"),
                        "download": f"/data/sensei/models/{m['id']}/artifact"} for m in models],
            "scoringModelId": model_id if doc.get("mode") != "train" else None,
            "output": result.get("output"),
            "log": f"{base}/logs/worker.log",
        }

    def compare_experiment(self, caller: Caller, experiment_id: str) -> dict[str, Any]:
        """The compare view of an Experiment's runs (a sweep's trials): its newest
        MAX_COMPARE_EXPERIMENT runs."""
        rows, total = self._index().table_page(caller.scope, {"experimentId": experiment_id}, None,
                                               "created", True, 0, MAX_COMPARE_EXPERIMENT)
        if len(rows) < 2:
            raise BadRequest(f"Experiment {experiment_id!r} has {len(rows)} run(s) here: compare "
                             "needs 2")
        out = self._compare(caller, [r["id"] for r in rows])
        out["experiment"] = {"id": experiment_id, "runs": total}
        return out

    def compare(self, caller: Caller, run_ids: list[str]) -> dict[str, Any]:
        ids = list(dict.fromkeys(i for i in run_ids if i))
        if not 2 <= len(ids) <= MAX_COMPARE:
            raise BadRequest(f"Compare takes 2 to {MAX_COMPARE} distinct run ids, got {len(ids)}")
        return self._compare(caller, ids)

    def _compare(self, caller: Caller, ids: list[str]) -> dict[str, Any]:
        runs = [self.detail(caller, i) for i in ids]
        keys = sorted({p["key"] for r in runs for p in r["parameters"]})
        table = []
        for key in keys:
            values = [next((p["value"] for p in r["parameters"] if p["key"] == key), None) for r in runs]
            sources = [next((p["source"] for p in r["parameters"] if p["key"] == key), None) for r in runs]
            table.append({"key": key, "values": values, "sources": sources,
                          "differs": len({repr(v) for v in values}) > 1})
        metric_names = sorted({m["name"] for r in runs for m in r["metrics"]})
        metrics = [{"name": n, "values": [next((m["value"] for m in r["metrics"] if m["name"] == n), None)
                                          for r in runs]} for n in metric_names]
        return {"runs": runs, "parameters": table, "metrics": metrics,
                "seriesNames": sorted({n for r in runs for n in r["series"]})}

    # -- the log ---------------------------------------------------------------------------------

    def log_chunk(self, caller: Caller, run_id: str, offset: int) -> dict[str, Any]:
        """The worker log from byte `offset` (at most 256 KiB), for following it live."""
        doc = self._live_run(caller, run_id)
        state = self._state(caller, run_id)
        path = self.registry.home.runs / run_id / "worker.log"
        # The run's own log only: a link planted in the run folder is not followed (as run_log).
        plain = path.exists() and not path.is_symlink() and path.stat().st_nlink == 1
        size = path.stat().st_size if plain else 0
        offset = max(0, min(int(offset), size))
        if offset == 0 and size > _LOG_CHUNK:
            offset = size - _LOG_CHUNK   # a long log starts at its last 256 KiB
        text = ""
        if size > offset:
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read(_LOG_CHUNK)
            text = data.decode("utf-8", errors="replace")
            offset += len(data)
        return {"runId": run_id, "experimentId": doc.get("experimentId"), "state": state,
                "offset": offset, "size": size, "text": text}


def _parameters(resolved: dict[str, Any]) -> list[dict[str, Any]]:
    values = resolved.get("values") or {}
    sources = resolved.get("provenance") or {}
    return [{"key": k, "value": v, "source": sources.get(k)} for k, v in values.items()]


def system_summary(result: dict[str, Any], runtime: dict[str, Any], running: bool) -> dict[str, Any]:
    """The run's system metrics summary (runtime.sysmetrics), or why there is none."""
    if result.get("system"):
        return result["system"]
    backend = (runtime.get("plan") or {}).get("backend")
    if backend == "ray":
        return {"sampled": False, "reason": "not sampled: a Ray job runs on the cluster's nodes "
                                            "(its use is on the Ray dashboard)"}
    if running:
        return {"sampled": True, "reason": "sampling: the summary comes at the run's end"}
    return {"sampled": False, "reason": "not sampled (no summary was recorded for this run)"}
