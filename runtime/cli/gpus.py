"""`run gpus`: the host's CUDA devices and which runs hold them (runtime.gpus)."""
from __future__ import annotations

import argparse
import json

from ..gpus import gpu_table
from ..home import resolve_home
from ..registry import Registry


def main(args: argparse.Namespace) -> int:
    registry = Registry.open(resolve_home(args.home))
    try:
        rows = gpu_table(registry)
    finally:
        registry.close()
    if args.json:
        print(json.dumps(rows))
        return 0
    if not rows:
        print("No CUDA device on this host (nvidia-smi is missing or reports none); runs that ask "
              "for GPUs are refused unless --device cpu")
        return 0
    print(f"{'GPU':>3}  {'NAME':<28} {'MEMORY (MiB)':>17}  HELD BY")
    for row in rows:
        used, total = row["memoryUsedMB"], row["memoryTotalMB"]
        memory = f"{'?' if used is None else used} / {'?' if total is None else total}"
        holders = ", ".join(
            h["runId"] + ("" if h["share"] >= 1 else f" ({h['share']:g})")
            for h in row["holders"]) or "free"
        print(f"{row['index']:>3}  {row['name'][:28]:<28} {memory:>17}  {holders}")
    return 0
