"""How much memory a retail-sales run may take for its data, and so how many rows it handles at
once: the smaller of the memory available (/proc/meminfo) and the room left under the process's
cgroup limit (v1 or v2; inside a container /proc/meminfo shows the host's memory, not the limit).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

# Bytes a row of the stage's feature frame costs at its peak, above the worker's imports,
# measured (not guessed) by benchmarks/bench_memory.py --row-bytes: each path run once in a fresh
# process on 143k..429k-row synthetic sets, peak RSS (VmHWM, reset before the stage) minus the RSS
# before it, over the rows; the largest measured, rounded up. A score's frame holds the data's
# rows and the model's history rows of the same stores (a 30-week scoring file: 4.5x its rows).
# Measured: score chunked 1,201..1,412, whole 1,224..1,293; train (and evaluate) chunked
# 1,277..1,875, whole 1,311..1,926 (the smaller set's fixed costs: the larger figure).
SCORE_ROW_BYTES = 1500            # a chunk of a chunked score
SCORE_WHOLE_ROW_BYTES = 1400      # score of a table read whole
TRAIN_ROW_BYTES = 2000            # a range of a chunked training
TRAIN_WHOLE_ROW_BYTES = 2000      # train of a table read whole (features, matrix in memory)

# A chunk never takes more than this above the imports (350-420 MB of torch, pandas, pyarrow):
# a score peaks under 1.5 GB at any data size (about 1.2 GB), and larger chunks are no faster.
MAX_CHUNK_BYTES = 768 << 20
MIN_CHUNK_ROWS = 20_000
# Of the memory left (available, or room under the cgroup limit), the share one run's data takes.
BUDGET_SHARE = 0.5

UNLIMITED = 1 << 60               # cgroup v1 writes "no limit" as a huge number near 2**63

@dataclass(frozen=True)
class MemoryRoom:
    """Bytes this process may still take, and what bounds it (said in the run's log)."""

    bytes: int
    source: str

    def budget(self) -> int:
        """What one run's data may take: a share of the room, at most MAX_CHUNK_BYTES."""
        return int(min(MAX_CHUNK_BYTES, self.bytes * BUDGET_SHARE))


def memory_room(*, meminfo: Path = Path("/proc/meminfo"), cgroup_root: Path = Path("/sys/fs/cgroup"),
                proc_cgroup: Path = Path("/proc/self/cgroup")) -> MemoryRoom:
    """The smaller of MemAvailable and the room under this process's cgroup limit (v2:
    memory.max minus memory.current; v1: memory.limit_in_bytes minus memory.usage_in_bytes;
    page cache the kernel can drop, inactive_file, is counted as room; the tightest limit on
    the path from the process's cgroup up to the root applies)."""
    available = _mem_available(meminfo)
    room = cgroup_room(cgroup_root, proc_cgroup)
    if room is not None and (available is None or room[0] < available):
        return MemoryRoom(max(0, room[0]), room[1])
    if available is not None:
        return MemoryRoom(available, "MemAvailable")
    return MemoryRoom(4 << 30, "unknown (assumed 4 GiB)")


def _mem_available(meminfo: Path) -> Optional[int]:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def cgroup_room(root: Path, proc_cgroup: Path) -> Optional[tuple[int, str]]:
    """(bytes left under the tightest memory limit, a description), or None without a limit."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    v1_path = v2_path = None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            v2_path = parts[2]
        elif "memory" in parts[1].split(","):
            v1_path = parts[2]
    found = []
    if v1_path is not None:
        found.append(_v1_room(root / "memory", v1_path))
    if v2_path is not None:
        found.append(_v2_room(root, v2_path))
        found.append(_v2_room(root / "unified", v2_path))
    rooms = [r for r in found if r is not None]
    return min(rooms) if rooms else None


def _candidates(mount: Path, path: str) -> list[Path]:
    """The cgroup's folder and its ancestors up to the mount, innermost first; inside a cgroup
    namespace (or a container that mounts its own cgroup at the root) the path may not exist
    below the mount, and the mount's root is the process's own cgroup."""
    parts = [p for p in path.strip("/").split("/") if p]
    folders = [mount.joinpath(*parts[:i]) for i in range(len(parts), 0, -1)]
    return [f for f in folders if f.is_dir()] + [mount]


def _v2_room(mount: Path, path: str) -> Optional[tuple[int, str]]:
    best: Optional[tuple[int, str]] = None
    for folder in _candidates(mount, path):
        limit = _read_int(folder / "memory.max")
        usage = _read_int(folder / "memory.current")
        if limit is None or limit >= UNLIMITED or usage is None:
            continue
        free = limit - usage + (_stat(folder / "memory.stat", "inactive_file") or 0)
        if best is None or free < best[0]:
            best = (free, f"cgroup v2 {folder / 'memory.max'} ({limit >> 20} MiB, "
                          f"{usage >> 20} MiB used)")
    return best


def _v1_room(mount: Path, path: str) -> Optional[tuple[int, str]]:
    best: Optional[tuple[int, str]] = None
    for folder in _candidates(mount, path):
        limit = _read_int(folder / "memory.limit_in_bytes")
        usage = _read_int(folder / "memory.usage_in_bytes")
        hierarchical = _stat(folder / "memory.stat", "hierarchical_memory_limit")
        if limit is not None and hierarchical is not None:
            limit = min(limit, hierarchical)
        if limit is None or limit >= UNLIMITED or usage is None:
            continue
        inactive = _stat(folder / "memory.stat", "total_inactive_file")
        if inactive is None:
            inactive = _stat(folder / "memory.stat", "inactive_file")
        free = limit - usage + (inactive or 0)
        if best is None or free < best[0]:
            best = (free, f"cgroup v1 {folder / 'memory.limit_in_bytes'} ({limit >> 20} MiB, "
                          f"{usage >> 20} MiB used)")
    return best


def _read_int(path: Path) -> Optional[int]:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return UNLIMITED
    try:
        return int(text)
    except ValueError:
        return None


def _stat(path: Path, key: str) -> Optional[int]:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return None


@dataclass(frozen=True)
class Plan:
    """How a run reads its data: whole (chunk_rows 0) or in chunks of `chunk_rows` rows, and why."""

    chunk_rows: int
    reason: str

    @property
    def whole(self) -> bool:
        return self.chunk_rows == 0


def plan(rows: int, *, whole_row_bytes: int, chunk_row_bytes: int,
         room: Optional[MemoryRoom] = None) -> Plan:
    """The whole-file path when the data set's rows fit the budget read whole (it is the faster
    path); else chunks of as many rows as the budget holds (at least MIN_CHUNK_ROWS)."""
    room = room or memory_room()
    budget = room.budget()
    said = f"budget {_mb(budget)} of {_mb(room.bytes)} free ({room.source})"
    need = rows * whole_row_bytes
    if need <= budget:
        return Plan(0, f"whole file: {rows:,} rows need about {_mb(need)} ({whole_row_bytes} "
                       f"bytes a row), within the {said}")
    chunk = max(MIN_CHUNK_ROWS, budget // chunk_row_bytes)
    return Plan(int(chunk), f"chunks of {chunk:,} rows: {rows:,} rows read whole would need about "
                            f"{_mb(need)} ({whole_row_bytes} bytes a row), over the {said}")


def _mb(n: int) -> str:
    return f"{n / (1 << 20):,.1f} MB" if n < (10 << 20) else f"{n >> 20:,} MB"
