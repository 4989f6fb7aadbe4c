"""`run services list|show|pause|resume|run-now`: MLServices' schedules and published Models from
the command line, over the registry the server's scheduler reads (runtime.mlservices)."""
from __future__ import annotations

import argparse
import json
from typing import Any

# Only argparse at import: `run --help` builds this parser (the rest is imported by main).


def _metrics(metrics: Any) -> str:
    from ..numbers import readable

    return ", ".join(f"{m.get('name')} {readable(m.get('value'))}" for m in metrics or [])


def _schedule_line(name: str, service: dict[str, Any], status: dict[str, Any]) -> str:
    spec = service.get(name) or {}
    if not spec.get("cron"):
        return f"  {name + ':':18s}none"
    row = status["schedules"].get(name) or {}
    window = "".join(f", {k} {spec[k]}" for k in ("startTime", "endTime", "timezone") if spec.get(k))
    line = (f"  {name + ':':18s}{spec['cron']!r}{window}; next {row.get('nextFire') or '-'}, "
            f"last {row.get('lastFire') or '-'} (run {row.get('lastRunId') or '-'}), "
            f"fires {row.get('fires', 0)}")
    for key in ("skipped", "skipReason", "error"):
        if row.get(key):
            line += f"; {key} {row[key]}"
    return line


def _show(desk: Any, caller: Any, doc: dict[str, Any]) -> str:
    status = doc["status"]
    published = status.get("publishedModel")
    lines = [f"MLService {doc['id']} ({doc.get('name')}), MLInstance {doc.get('mlInstanceId')}"
             + ("  PAUSED" if status["paused"] else ""),
             _schedule_line("trainingSchedule", doc, status),
             _schedule_line("scoringSchedule", doc, status),
             f"  {'data:':18s}training {doc.get('trainingDataSetId') or '-'} (timeframe "
             f"{doc.get('trainingTimeframe') or '-'} min), scoring {doc.get('scoringDataSetId')} "
             f"(timeframe {doc.get('scoringTimeframe') or '-'} min)"]
    if published:
        lines.append(f"  {'published model:':18s}{published['modelId']} (run "
                     f"{published.get('experimentRunId')}, created {published.get('created')}"
                     + (f"; {_metrics(published.get('metrics'))}" if published.get('metrics')
                        else "") + f"): {published.get('reason')}")
    else:
        lines.append(f"  {'published model:':18s}none yet")
    if status.get("lastPublication"):
        decision = status["lastPublication"]
        lines.append(f"  {'last decision:':18s}run {decision.get('runId')}: "
                     f"{'published' if decision.get('published') else 'not published'} "
                     f"({decision.get('reason')})")
    for run in status.get("recentRuns") or []:
        state = desk.registry.run_state(caller.scope, run["runId"])
        lines.append(f"  {'run:':18s}{run['runId']} {run['mode']:<6} "
                     f"{state.value if state is not None else '?':<8}"
                     f" {run['created']}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from ..home import resolve_home
    from ..listing import Filter, ListQuery
    from ..mlservices import ServiceDesk
    from ..schemas import MLSERVICE
    from ..registry import Caller, Registry

    registry = Registry.open(resolve_home(args.home))
    caller = Caller.local(org=args.org, sandbox=args.sandbox)
    desk = ServiceDesk(registry)
    try:
        if args.action == "list":
            page = registry.list(MLSERVICE, caller, ListQuery(
                filters=(Filter("deleted", "==", False, "bool"),), order=(("created", True),),
                limit=100))
            docs = [desk.with_status(caller.scope, doc) for doc in page.children]
            if args.json:
                print(json.dumps(docs))
                return 0
            if not docs:
                print(f"No MLServices in sandbox {caller.scope.sandbox!r}")
                return 0
            print(f"{'ID':36}  {'NAME':20} {'STATE':7} {'NEXT TRAIN':24} {'NEXT SCORE':24} "
                  "PUBLISHED MODEL")
            for doc in docs:
                rows = doc["status"]["schedules"]
                nxt = {k: (rows.get(k) or {}).get("nextFire") or "-"
                       for k in ("trainingSchedule", "scoringSchedule")}
                published = (doc["status"].get("publishedModel") or {}).get("modelId") or "-"
                print(f"{doc['id']:36}  {str(doc.get('name'))[:20]:20} "
                      f"{'paused' if doc['status']['paused'] else 'active':7} "
                      f"{nxt['trainingSchedule']:24} {nxt['scoringSchedule']:24} {published}")
            return 0
        if args.action == "show":
            doc = desk.with_status(caller.scope, registry.get(MLSERVICE, caller, args.service))
        elif args.action == "pause":
            doc = desk.pause(caller, args.service)
        elif args.action == "resume":
            doc = desk.resume(caller, args.service)
        else:   # run-now
            doc = desk.run_now(caller, args.service, args.task)
        if args.json:
            print(json.dumps(doc))
        else:
            print(_show(desk, caller, doc))
            if args.action == "run-now":
                print(f"The {args.task} run starts at the next tick of a running `run serve` "
                      "of this home (within a second); with none running, when one starts.")
        return 0
    finally:
        registry.close()


def add_parser(sub: argparse._SubParsersAction, common: Any) -> None:
    services = sub.add_parser("services", help="MLServices: their schedules, next and last fires, "
                                               "published Model; pause, resume, run now")
    actions = services.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="list MLServices with their next fires")
    common(listing)
    for name, text in (("show", "one MLService: schedules, fires, published Model, its runs"),
                       ("pause", "fires of the MLService start no run until resumed"),
                       ("resume", "the next fire after now runs again (skipped ones are not "
                                  "made up)"),
                       ("run-now", "fire a schedule at the server's next tick")):
        action = actions.add_parser(name, help=text)
        action.add_argument("service", metavar="SERVICE", help="the MLService's id")
        if name == "run-now":
            action.add_argument("--task", choices=["train", "score"], default="score",
                                help="which schedule fires (default: score)")
        common(action)
    services.set_defaults(handler="runtime.cli.services:main")
