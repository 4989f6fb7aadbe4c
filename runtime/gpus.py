"""`run gpus`: each CUDA device of this host (index, name, memory used/total) and the runs that
hold a lease on it, read from the run ledger that every CLI process and server of the registry
shares (runtime.supervisor); and the one reader of nvidia-smi. No torch: nvidia-smi is the only
thing asked."""
from __future__ import annotations

import shutil
import subprocess
from typing import Any, Optional

NVIDIA_SMI_TIMEOUT_S = 5.0
_FIELDS = ("index", "uuid", "name", "memory.used", "memory.total")


def query_devices(*, memory_used: bool = True) -> list[dict[str, Any]]:
    """One row per device nvidia-smi reports (index, uuid, name, memoryUsedMB when asked,
    memoryTotalMB; a memory nvidia-smi says is "[N/A]" is None), numbered as nvidia-smi numbers
    them (PCI bus order: the indices leases and CUDA_VISIBLE_DEVICES use); [] when nvidia-smi is
    absent or fails (a driver without a GPU, a hung driver): both mean "no CUDA device here".
    The one reader of nvidia-smi: the dispatcher's host (runtime.dispatch) and `run gpus`."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    fields = [f for f in _FIELDS if memory_used or f != "memory.used"]
    try:
        out = subprocess.run([exe, f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"],
                             capture_output=True, text=True, timeout=NVIDIA_SMI_TIMEOUT_S,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    memory = len(fields) - 3
    devices = []
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < len(fields):
            continue
        try:   # the name may hold commas; the other fields never do
            device = {"index": int(parts[0]), "uuid": parts[1], "name": ",".join(parts[2:-memory])}
        except ValueError:
            continue
        if memory_used:
            device["memoryUsedMB"] = _number(parts[-2])
        device["memoryTotalMB"] = _number(parts[-1])
        devices.append(device)
    return devices


def _number(text: str) -> Optional[int]:
    try:
        return int(float(text))
    except ValueError:   # "[N/A]" on some boards
        return None


def leases(registry: Any) -> dict[int, list[dict[str, Any]]]:
    """Device index -> the runs holding a share of it: a started run whose owner or any process
    of its worker's group still lives (what the queue counts). Only this host's runs: device
    indices are per host, and so are leases on them."""
    from .hosts import host_id, on_host
    from .procs import same_process_alive, worker_group_alive

    held: dict[int, list[dict[str, Any]]] = {}
    here = host_id()
    for row in registry.ledger.rows():
        gpus = (row.get("grant") or {}).get("gpus") or {}
        if row.get("phase") != "running" or not gpus or not on_host(row, here):
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
