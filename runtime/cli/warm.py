"""`run warm list|stop`: the warm parents of this home's python runs (runtime.warm)."""
from __future__ import annotations

import argparse
import json
import time

from ..home import resolve_home
from ..warm import describe_home, stop_home


def main(args: argparse.Namespace) -> int:
    root = resolve_home(args.home).root
    if args.action == "stop":
        pids = stop_home(root)
        if args.json:
            print(json.dumps({"stopped": pids}))
        else:
            print(f"Stopped {len(pids)} warm parent(s)" + (f": pid {', '.join(map(str, pids))}"
                                                          if pids else ""))
        return 0
    parents = describe_home(root)
    if args.json:
        print(json.dumps(parents))
        return 0
    if not parents:
        print("No warm parent runs for this home: `run serve` starts them on its first python "
              "run, a sweep for its trials, `run train --warm` one that waits for the next runs")
        return 0
    print(f"{'PID':>7}  {'DEVICE':<6} {'RUNS':>5} {'UP (s)':>7}  {'ENDS':<22} PYTHON / PRELOADED")
    for p in parents:
        ends = (f"retiring: {p['retiring']}" if p.get("retiring") else
                f"with pid {p['owner']}" if p.get("owner") else f"idle {p.get('idleS', 0):g} s")
        print(f"{p['pid']:>7}  {p['device']:<6} {p['runs']:>5} {time.time() - p['since']:>7.0f}  "
              f"{ends[:22]:<22} {p['python']}")
        print(f"{'':>7}  {'':<6} {'':>5} {'':>7}  {'':<22} {', '.join(p['preloaded'])}")
    return 0
