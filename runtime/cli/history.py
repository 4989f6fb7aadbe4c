"""`run runs list|show`, `run logs RUN [--follow]` and `run cancel RUN`: the run history and
control of live runs from the command line, over the same registry the server writes."""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ..errors import NotFound
from ..home import resolve_home
from ..listing import Filter, ListQuery
from ..numbers import readable
from ..schemas import EXPERIMENT_RUN, MODEL, RunTask
from ..registry import Caller, Registry

CANCEL_WAIT_S = 10.0
FOLLOW_POLL_S = 0.2


def _open(args: argparse.Namespace) -> tuple[Registry, Caller]:
    return (Registry.open(resolve_home(args.home)),
            Caller.local(org=args.org, sandbox=args.sandbox))


def _run_id(registry: Registry, caller: Caller, text: str) -> str:
    """A run id; `latest` names the sandbox's newest run."""
    if text != "latest":
        return text
    page = registry.list(EXPERIMENT_RUN, caller, ListQuery(
        filters=(Filter("deleted", "==", False, "bool"),), order=(("created", True),), limit=1))
    if not page.children:
        raise NotFound(f"There are no runs in sandbox {caller.scope.sandbox!r} yet")
    return page.children[0]["id"]


def _status(registry: Registry, caller: Caller, run_id: str) -> RunTask:
    return registry.require_status(caller, run_id).task


def main(args: argparse.Namespace) -> int:
    registry, caller = _open(args)
    try:
        if args.action == "list":
            return _list(registry, caller, args)
        return _show(registry, caller, args)
    finally:
        registry.close()


def _list(registry: Registry, caller: Caller, args: argparse.Namespace) -> int:
    if getattr(args, "search", None) or getattr(args, "sort", "-created") != "-created":
        rows = _indexed_rows(registry, caller, args)
    else:
        rows = _newest_rows(registry, caller, args)
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("no runs")
        return 0
    print(f"{'RUN':36}  {'MODE':15}  {'STATE':8}  {'CREATED':24}  {'TIME':>8}  MESSAGE")
    for row in rows:
        took = f"{row['duration_s']:.1f}s" if row["duration_s"] is not None else "-"
        message = (row["message"] or "").replace("\n", " ")
        print(f"{row['id']:36}  {row['mode'] or '':15}  {row['state']:8}  {row['created']:24}  "
              f"{took:>8}  {message[:70]}")
    return 0


def _indexed_rows(registry: Registry, caller: Caller, args: argparse.Namespace) -> list[dict[str, Any]]:
    """A search (runtime.run_search) or a sort: the runs table's query over the runs index,
    with each run's final metrics, parameters and system metrics summary."""
    from ..run_views import MAX_LIMIT, RunViews, TableQuery

    query: dict[str, str] = {"sort": args.sort, "filter": args.search or "", "params": ""}
    if args.experiment:
        query["experimentId"] = args.experiment
    if args.state:
        query["state"] = args.state
    views, rows = RunViews(registry), []
    while len(rows) < args.limit:
        want = min(MAX_LIMIT, args.limit - len(rows))
        page = views.table(caller, TableQuery.parse({**query, "start": str(len(rows)),
                                                      "limit": str(want)}))
        for run in page["runs"]:
            task = _status(registry, caller, run["id"])
            rows.append({"id": run["id"], "mode": run["mode"], "experimentId": run["experimentId"],
                         "state": run["state"], "created": run["created"],
                         "duration_s": task.duration_s(),
                         "message": task.message if task.message is not None else "",
                         "metrics": run["metrics"], "system": views.system_values(run["id"])})
        if len(page["runs"]) < want:
            break
    return rows


def _newest_rows(registry: Registry, caller: Caller, args: argparse.Namespace) -> list[dict[str, Any]]:
    filters = [Filter("deleted", "==", False, "bool")]
    if args.experiment:
        filters.append(Filter("experimentId", "==", args.experiment, "str"))
    rows: list[dict[str, Any]] = []
    start = 0
    while len(rows) < args.limit:   # newest first; the state lives beside the run, so filter here
        page = registry.list(EXPERIMENT_RUN, caller, ListQuery(
            filters=tuple(filters), order=(("created", True),), limit=100, start=start))
        for run in page.children:
            task = _status(registry, caller, run["id"])
            if args.state and task.state.value != args.state:
                continue
            rows.append({"id": run["id"], "mode": run.get("mode"),
                         "experimentId": run.get("experimentId"), "state": task.state.value,
                         "created": run.get("created"), "duration_s": task.duration_s(),
                         "message": task.message if task.message is not None else ""})
            if len(rows) >= args.limit:
                break
        start += len(page.children)
        if not page.children or start >= page.total:
            break
    return rows


def _show(registry: Registry, caller: Caller, args: argparse.Namespace) -> int:
    from ..supervisor import describe_owner

    args.run = _run_id(registry, caller, args.run)
    run = registry.get(EXPERIMENT_RUN, caller, args.run)
    task = _status(registry, caller, args.run)
    runtime = run.get("runtime") or {}
    result = run.get("result") or {}
    resolved = runtime.get("resolved") or {}
    ledger = registry.ledger.get(args.run)
    model = None
    if result.get("modelId"):
        try:
            model = registry.get(MODEL, caller, result["modelId"])
        except NotFound:
            model = None
    log_path = registry.home.runs / args.run / "worker.log"
    if args.json:
        print(json.dumps({"run": run, "status": task.model_dump(mode="json", exclude_none=True),
                          "owner": ledger,
                          "model": model, "log": str(log_path)}))
        return 0
    took = task.duration_s()
    lines = [f"Run {run['id']} ({run.get('mode')}, experiment {run.get('experimentId')})",
             f"  state:     {task.state.value}" + (f" - {task.message}" if task.message else ""),
             f"  created:   {run.get('created')}",
             f"  started:   {task.started or '-'}",
             f"  ended:     {task.ended or '-'}"
             + (f"  ({took:.1f} s)" if took is not None else "")]
    for stage, secs in (result.get("durations_s") or {}).items():
        lines.append(f"    {stage + ':':18}{secs:.2f} s")
    if result.get("metrics"):
        lines.append("  metrics:   " + ", ".join(f"{m['name']} {readable(m['value'])}"
                                                  for m in result["metrics"]))
    lines += _system_lines(result.get("system"), runtime, not task.state.is_terminal())
    if result.get("modelId"):
        where = (model or {}).get("modelArtifactUri", "deleted")
        lines.append(f"  model:     {result['modelId']} ({where})")
    elif runtime.get("modelId"):
        lines.append(f"  model:     {runtime['modelId']} (scored with)")
    if result.get("output"):
        lines.append(f"  output:    {result['output']}")
    if runtime.get("limits"):
        lines.append(f"  limits:    {json.dumps(runtime['limits'])}")
    if not task.state.is_terminal():
        lines.append(f"  owner:     {describe_owner(ledger)}")
    if runtime.get("plan"):
        lines.append(f"  plan:      {runtime['plan'].get('reason')}")
    values = resolved.get("values") or {}
    if values:
        provenance = resolved.get("provenance") or {}
        lines.append("  parameters:")
        width = max(len(k) for k in values)
        for key, value in values.items():
            shown = value if isinstance(value, str) else json.dumps(value)
            lines.append(f"    {key:{width}}  {shown}  ({provenance.get(key, '?')})")
    lines.append(f"  log:       {log_path}")
    print("\n".join(lines))
    return 0


def _system_lines(system: Any, runtime: dict[str, Any], running: bool) -> list[str]:
    """What the run took of the machine (runtime.sysmetrics), or why it was not sampled."""
    from ..run_views import system_summary

    system = system_summary({"system": system}, runtime, running)
    if not system.get("sampled") or system.get("samples") is None:
        return [f"  system:    {system.get('reason')}"]
    shown = [f"{label} {readable(system[key])}{unit}" for key, label, unit in (
        ("peak_memory_mb", "peak memory", " MB"), ("mean_memory_mb", "mean memory", " MB"),
        ("mean_cpu_percent", "mean CPU", f"% of {system.get('cores')} cores"),
        ("max_threads", "threads", ""), ("disk_read_mb", "disk read", " MB"),
        ("disk_write_mb", "disk written", " MB"), ("mean_gpu_percent", "mean GPU", "%"),
        ("peak_gpu_memory_mb", "peak GPU memory", " MB"),
        ("peak_spark_storage_mb", "Spark storage", " MB")) if system.get(key) is not None]
    lines = ["  system:    " + ", ".join(shown[:4])]
    if shown[4:]:
        lines.append("             " + ", ".join(shown[4:]))
    lines.append(f"             {system.get('samples')} samples every {readable(system.get('interval_s'))} s")
    return lines + [f"             {note}" for note in system.get("notes") or []]


def logs_main(args: argparse.Namespace) -> int:
    registry, caller = _open(args)
    try:
        args.run = _run_id(registry, caller, args.run)
        registry.get(EXPERIMENT_RUN, caller, args.run)
        path = registry.home.runs / args.run / "worker.log"
        offset = 0
        while True:
            ended = _status(registry, caller, args.run).state.is_terminal()
            try:
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    data = fh.read()
            except FileNotFoundError:
                data = b""
            if data:
                offset += len(data)
                sys.stdout.write(data.decode(errors="replace"))
                sys.stdout.flush()
            if not args.follow or ended:
                break
            time.sleep(FOLLOW_POLL_S)
        if not path.exists() and not args.follow:
            print(f"Run {args.run} has no worker log yet", file=sys.stderr)
        return 0
    finally:
        registry.close()


def cancel_main(args: argparse.Namespace) -> int:
    """Cancel a run whoever runs it (a local worker, a Spark worker or a Ray job): its owner stops
    it (and records ABORTED); a run whose owner is gone is stopped and recorded here."""
    from ..runs import RunExecutor

    registry, caller = _open(args)
    try:
        args.run = _run_id(registry, caller, args.run)
        registry.get(EXPERIMENT_RUN, caller, args.run)
        executor = RunExecutor(registry, kind="cli")
        executor.cancel(caller, args.run, f"cancelled by {caller.user_id} with run cancel")
        state = executor.wait_ended(caller, args.run, CANCEL_WAIT_S)
        task = _status(registry, caller, args.run)
        if args.json:
            print(json.dumps({"runId": args.run, "state": task.state.value,
                              "message": task.message}))
        else:
            print(f"Run {args.run} {task.state.value}"
                  + (f": {task.message}" if task.message else ""))
        return 0 if state is not None and state.is_terminal() else 1
    finally:
        registry.close()
