"""`run gpus`: each CUDA device of this host (index, name, memory used/total) and the runs that
hold a lease on it, read from the run ledger that every CLI process and server of the registry
shares (runtime.supervisor). No torch: nvidia-smi is the only thing asked."""
from __future__ import annotations

import shutil
import subprocess
from typing import Any, Optional

from .dispatch import NVIDIA_SMI_TIMEOUT_S

QUERY = "index,uuid,name,memory.used,memory.total"


def query_devices() -> list[dict[str, Any]]:
    """One row per device nvidia-smi reports, numbered as nvidia-smi numbers them (PCI bus order:
    the indices leases use); [] without nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    devices = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 5:
            continue
        try:   # the name may hold commas; the other fields never do
            devices.append({"index": int(parts[0]), "uuid": parts[1],
                            "name": ",".join(parts[2:-2]),
                            "memoryUsedMB": _number(parts[-2]),
                            "memoryTotalMB": _number(parts[-1])})
        except ValueError:
            continue
    return devices


def _number(text: str) -> Optional[int]:
    try:
        return int(float(text))
    except ValueError:   # "[N/A]" on some boards
        return None


def leases(registry: Any) -> dict[int, list[dict[str, Any]]]:
    """Device index -> the runs holding a share of it: a started run whose owner or any process
    of its worker's group still lives (what the queue counts)."""
    from .procs import same_process_alive, worker_group_alive

    held: dict[int, list[dict[str, Any]]] = {}
    for row in registry.ledger.rows():
        gpus = (row.get("grant") or {}).get("gpus") or {}
        if row.get("phase") != "running" or not gpus:
            continue
        owner = row.get("owner") or {}
        worker = row.get("worker") or {}
        alive = (same_process_alive(owner.get("pid"), owner.get("start"))
                 or worker_group_alive(worker))
        if not alive:
            continue
        for index, share in gpus.items():
            held.setdefault(int(index), []).append({
                "runId": row["run_id"], "sandbox": row.get("sandbox"), "share": float(share),
                "owner": f"{owner.get('kind', '?')} pid {owner.get('pid')}",
                "workerPid": worker.get("pid")})
    return held


def gpu_table(registry: Any, devices: Optional[list[dict[str, Any]]] = None) -> list[dict[str, Any]]:
    """The devices with their holders; a lease on an index nvidia-smi no longer reports is shown
    too (a device that fell off the bus still has its runs)."""
    devices = query_devices() if devices is None else devices
    held = leases(registry)
    rows = []
    for device in devices:
        holders = held.pop(device["index"], [])
        rows.append({**device, "leased": round(sum(h["share"] for h in holders), 6),
                     "holders": holders})
    for index, holders in sorted(held.items()):
        rows.append({"index": index, "uuid": None, "name": "(not reported by nvidia-smi)",
                     "memoryUsedMB": None, "memoryTotalMB": None,
                     "leased": round(sum(h["share"] for h in holders), 6), "holders": holders})
    return rows
