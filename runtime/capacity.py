"""Host capacity and the FIFO queue's admission rule: pure functions over plain data.

A run asks for CPU slots, GPU shares by index and memory; the host has so many of each. Which
queued run may start is decided here from the ledger rows (runtime.supervisor keeps them in the
registry, so a CLI run and a server run share one accounting). Nothing here touches the machine
except `host_capacity`, which reads the core count, the CUDA devices and /proc/meminfo.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Optional, Sequence

from .errors import BadRequest, ConfigError

# A run that names no `cpus` takes one CPU slot: two small runs share a 2-core host. Its worker's
# threads still follow the dispatcher's plan (all host cores unless `cpus` is given).
DEFAULT_RUN_CPUS = 1.0
# Memory reserved for the runtime itself and the OS, not handed to runs.
RESERVED_MEMORY_MB = 512
ENV_MAX_CONCURRENT = "MLRUNTIME_MAX_CONCURRENT_RUNS"


class NeverFits(ConfigError):
    """A run this host can never start, whatever else finishes: refused, not queued forever."""

    title, slug = "Insufficient Capacity", "insufficient-capacity"


@dataclass(frozen=True)
class Capacity:
    """What the host offers to runs."""

    cpus: float
    gpus: tuple[int, ...] = ()          # device indices, each worth one whole GPU
    memory_mb: Optional[int] = None     # None: memory is not accounted
    max_runs: Optional[int] = None      # --max-concurrent-runs

    def describe(self) -> str:
        parts = [f"{self.cpus:g} CPU slots", f"{len(self.gpus)} GPU(s)"]
        if self.memory_mb is not None:
            parts.append(f"{self.memory_mb} MB memory")
        if self.max_runs is not None:
            parts.append(f"at most {self.max_runs} concurrent runs")
        return ", ".join(parts)


@dataclass(frozen=True)
class Demand:
    """What one run asks for. `gpus` may be a fraction (< 1: a share of one GPU); `gpu_pinned`
    names the one device index it must have."""

    cpus: float = DEFAULT_RUN_CPUS
    gpus: float = 0.0
    memory_mb: int = 0
    gpu_pinned: Optional[int] = None

    def to_record(self) -> dict[str, Any]:
        return {"cpus": self.cpus, "gpus": self.gpus, "memory_mb": self.memory_mb,
                "gpu_pinned": self.gpu_pinned}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "Demand":
        return cls(cpus=float(record.get("cpus", DEFAULT_RUN_CPUS)),
                   gpus=float(record.get("gpus", 0.0)), memory_mb=int(record.get("memory_mb", 0)),
                   gpu_pinned=record.get("gpu_pinned"))

    def describe(self) -> str:
        parts = [f"{self.cpus:g} cpu"]
        if self.gpus:
            parts.append(f"{self.gpus:g} gpu" + (f" (cuda:{self.gpu_pinned})"
                                                  if self.gpu_pinned is not None else ""))
        if self.memory_mb:
            parts.append(f"{self.memory_mb} MB")
        return ", ".join(parts)


NO_DEMAND = Demand(cpus=0.0)   # a run placed by a cluster (ray): it takes nothing of this host


@dataclass(frozen=True)
class Grant:
    """What a started run holds: its CPU slots, its GPU shares by index, its memory."""

    cpus: float
    gpus: Mapping[int, float] = field(default_factory=dict)
    memory_mb: int = 0

    def to_record(self) -> dict[str, Any]:
        return {"cpus": self.cpus, "gpus": {str(k): v for k, v in self.gpus.items()},
                "memory_mb": self.memory_mb}

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> "Grant":
        return cls(cpus=float(record.get("cpus", 0.0)),
                   gpus={int(k): float(v) for k, v in (record.get("gpus") or {}).items()},
                   memory_mb=int(record.get("memory_mb", 0)))

    @property
    def gpu_indices(self) -> tuple[int, ...]:
        return tuple(sorted(self.gpus))


def host_capacity(*, cpu_count: int, gpu_indices: Sequence[int] = (),
                  max_runs: Optional[int] = None, memory_mb: Optional[int] = None) -> Capacity:
    """The host's capacity; `memory_mb` defaults to MemTotal less RESERVED_MEMORY_MB, and
    `max_runs` to $MLRUNTIME_MAX_CONCURRENT_RUNS."""
    if memory_mb is None:
        total = _mem_total_mb()
        memory_mb = None if total is None else max(0, total - RESERVED_MEMORY_MB)
    if max_runs is None and os.environ.get(ENV_MAX_CONCURRENT, "").strip():
        max_runs = int(os.environ[ENV_MAX_CONCURRENT])
    if max_runs is not None and max_runs < 1:
        raise BadRequest(f"The concurrent-run cap must be at least 1, got {max_runs}")
    return Capacity(cpus=float(max(1, cpu_count)), gpus=tuple(gpu_indices), memory_mb=memory_mb,
                    max_runs=max_runs)


def _mem_total_mb() -> Optional[int]:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def demand_for(resources: Any, plan: Any, capacity: Capacity,
               device: Optional[str] = None) -> Demand:
    """The demand of a planned run: `cpus` (capped at the host's slots, as the dispatcher caps its
    threads), the plan's GPUs (`--device cuda:N` pins one), and `driverMemory` when given.
    Cluster plans take nothing of this host."""
    if getattr(plan, "on_cluster", False):
        return NO_DEMAND
    cpus = float(resources.cpus) if getattr(resources, "cpus", None) else DEFAULT_RUN_CPUS
    gpus = float(len(plan.gpu_indices))
    share = float(getattr(plan, "gpus", 0) or 0)
    if plan.gpu_indices and 0 < share < 1:   # a share of one device (gpus: 0.5)
        gpus = share
    pinned = None
    text = (device or "").strip().lower()
    if 0 < gpus <= 1 and text.startswith("cuda:") and text[5:].isdigit():
        pinned = int(text[5:])
    memory = int(getattr(resources, "driver_memory_mb", None) or 0)
    return Demand(cpus=min(cpus, capacity.cpus), gpus=gpus, memory_mb=memory, gpu_pinned=pinned)


def check_fits(demand: Demand, capacity: Capacity) -> None:
    """Raise NeverFits when `demand` exceeds what the host has even when idle."""
    problems = []
    if demand.cpus > capacity.cpus:
        problems.append(f"{demand.cpus:g} CPU slots (the host has {capacity.cpus:g})")
    whole = _whole_gpus(demand.gpus)
    if whole > len(capacity.gpus):
        problems.append(f"{demand.gpus:g} GPU(s) (the host has {len(capacity.gpus)})")
    if demand.gpu_pinned is not None and demand.gpu_pinned not in capacity.gpus:
        problems.append(f"GPU cuda:{demand.gpu_pinned} (the host has "
                        f"{', '.join(f'cuda:{i}' for i in capacity.gpus) or 'none'})")
    if capacity.memory_mb is not None and demand.memory_mb > capacity.memory_mb:
        problems.append(f"{demand.memory_mb} MB of memory (the host offers runs "
                        f"{capacity.memory_mb} MB)")
    if problems:
        raise NeverFits("This run can never start on this host: it asks for "
                        + "; ".join(problems) + ". Ask for less, or run it on a larger host")


def _whole_gpus(gpus: float) -> int:
    import math

    return int(math.ceil(gpus - 1e-9)) if gpus > 0 else 0


@dataclass
class Usage:
    """What the started runs hold."""

    cpus: float = 0.0
    gpus: dict[int, float] = field(default_factory=dict)
    memory_mb: int = 0
    runs: int = 0

    @classmethod
    def of(cls, grants: Iterable[Grant]) -> "Usage":
        usage = cls()
        for grant in grants:
            usage.add(grant)
        return usage

    def add(self, grant: Grant) -> None:
        self.cpus += grant.cpus
        self.memory_mb += grant.memory_mb
        self.runs += 1
        for index, share in grant.gpus.items():
            self.gpus[index] = self.gpus.get(index, 0.0) + share


def try_grant(demand: Demand, usage: Usage, capacity: Capacity) -> tuple[Optional[Grant], str]:
    """A grant for `demand` given `usage`, or None and what it waits for."""
    if capacity.max_runs is not None and usage.runs >= capacity.max_runs:
        return None, f"{usage.runs} of at most {capacity.max_runs} concurrent runs are running"
    if demand.cpus > 0 and usage.cpus + demand.cpus > capacity.cpus + 1e-9:
        return None, (f"{demand.cpus:g} CPU slot(s); {capacity.cpus - usage.cpus:g} of "
                      f"{capacity.cpus:g} free")
    if demand.memory_mb and capacity.memory_mb is not None and (
            usage.memory_mb + demand.memory_mb > capacity.memory_mb):
        return None, (f"{demand.memory_mb} MB of memory; "
                      f"{capacity.memory_mb - usage.memory_mb} MB free")
    gpus = _pick_gpus(demand, usage, capacity)
    if gpus is None:
        free = [i for i in capacity.gpus if usage.gpus.get(i, 0.0) <= 1e-9]
        return None, f"{demand.gpus:g} GPU(s); free: {', '.join(map(str, free)) or 'none'}"
    return Grant(cpus=demand.cpus, gpus=gpus, memory_mb=demand.memory_mb), ""


def _pick_gpus(demand: Demand, usage: Usage, capacity: Capacity) -> Optional[dict[int, float]]:
    """GPU shares by index: whole free devices for a whole request (lowest index first), or the
    fullest device that still has room for a fraction (so fractions pack together)."""
    if demand.gpus <= 0:
        return {}
    candidates = ([demand.gpu_pinned] if demand.gpu_pinned is not None else list(capacity.gpus))
    if demand.gpus < 1:
        fitting = [i for i in candidates if i in capacity.gpus
                   and usage.gpus.get(i, 0.0) + demand.gpus <= 1.0 + 1e-9]
        if not fitting:
            return None
        best = max(fitting, key=lambda i: (usage.gpus.get(i, 0.0), -i))
        return {best: demand.gpus}
    need = _whole_gpus(demand.gpus)
    free = [i for i in candidates if i in capacity.gpus and usage.gpus.get(i, 0.0) <= 1e-9]
    if len(free) < need:
        return None
    return {i: 1.0 for i in free[:need]}


@dataclass(frozen=True)
class QueueEntry:
    """One queued run as the admission rule sees it."""

    run_id: str
    seq: int
    demand: Demand


def admit(queued: Sequence[QueueEntry], grants: Iterable[Grant],
          capacity: Capacity) -> tuple[dict[str, Grant], dict[str, str]]:
    """Strict FIFO: walk the queue in order and start runs while the head fits; the first one that
    does not fit stops the walk (a later, smaller run never overtakes it). Returns the grants and,
    for each run left waiting, its position and what it waits for."""
    usage = Usage.of(grants)
    granted: dict[str, Grant] = {}
    waiting: dict[str, str] = {}
    blocked_by: Optional[str] = None
    ordered = sorted(queued, key=lambda e: e.seq)
    for position, entry in enumerate(ordered, start=1):
        if blocked_by is None:
            grant, why = try_grant(entry.demand, usage, capacity)
            if grant is not None:
                granted[entry.run_id] = grant
                usage.add(grant)
                continue
            blocked_by = why
        ahead = position - 1 - len(granted)
        waiting[entry.run_id] = (f"Queued: position {ahead + 1} of {len(ordered) - len(granted)}"
                                 f", waiting for {blocked_by}")
    return granted, waiting
