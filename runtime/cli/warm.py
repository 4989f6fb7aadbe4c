"""`run warm list|stop`: this home's warm workers, both kinds (runtime.pools): the warm parents
python runs are forked from, and the warm Spark workers pyspark runs go to."""
from __future__ import annotations

import argparse
import json
import time

from ..home import resolve_home
from ..pools import describe_home, stop_home


def main(args: argparse.Namespace) -> int:
    root = resolve_home(args.home).root
    if args.action == "stop":
        stopped = stop_home(root)
        if args.json:
            print(json.dumps({"stopped": stopped}))
        else:
            words = ", ".join(f"{s['kind']} pid {s['pid']}" + ("" if s["gone"] else " (still ending)")
                              for s in stopped)
            print(f"Stopped {len(stopped)} warm worker(s)" + (f": {words}" if stopped else ""))
        return 0
    workers = describe_home(root)
    if args.json:
        print(json.dumps(workers))
        return 0
    if not workers:
        print(f"No warm worker runs for this home ({root}): `run serve` starts them on its first "
              "run, a sweep for its trials, `run train --warm` one that waits for the next runs")
        return 0
    print(f"Warm workers of {root}")
    print(f"{'KIND':<6} {'PID':>7} {'RUNS':>5} {'IDLE (s)':>8}  {'ENDS':<24} KEY")
    now = time.time()
    for w in workers:
        busy = w.get("running") or w.get("state") in ("busy", "starting")
        idle = "busy" if busy else f"{now - w.get('idleSince', now):.0f}"
        ends = (f"retiring: {w['retiring']}" if w.get("retiring") else
                f"with pid {w['owner']}" if w.get("owner") else f"idle {w.get('idleS', 0):g} s")
        print(f"{w['kind']:<6} {w['pid']:>7} {w.get('runs', 0):>5} {idle:>8}  {ends[:24]:<24} "
              f"{w['key']}: {w.get('summary', '')}")
        if w.get("preloaded"):
            print(f"{'':<6} {'':>7} {'':>5} {'':>8}  {'':<24} preloaded {', '.join(w['preloaded'])}")
    return 0
