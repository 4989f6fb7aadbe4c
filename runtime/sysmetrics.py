"""System metrics of a run, sampled inside its worker: CPU, resident memory, disk I/O and threads of
the worker's process group (the worker and every process below it), each leased GPU's use (NVML)
and, in a Spark driver, the executors' memory that Spark reports.

Samples go through the run's SeriesWriter as `system/...` series beside the model's metrics (the
host ingests them like any other); `SystemSampler.stop()` returns the run's summary (peak memory,
mean CPU, mean GPU use), which the worker puts in its result. psutil, NVML and pyspark are imported
lazily: a run without them is still a run, its summary says what was not sampled and why.
"""
from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Any, Callable, Optional

from .metrics_series import SeriesWriter

__all__ = ["DEFAULT_INTERVAL_S", "SYSTEM_PREFIX", "SUMMARY_KEYS", "SystemSampler", "start_sampler"]

log = logging.getLogger("runtime.sysmetrics")

SYSTEM_PREFIX = "system/"
DEFAULT_INTERVAL_S = 1.0
# Who belongs to the group is re-read every this many samples: a walk of /proc costs more than
# the sample itself, and processes rarely come and go every second.
MEMBERS_EVERY = 5
MB = 1024 * 1024
# The numbers of a summary that the runs index keeps (sortable, searchable as system.NAME).
SUMMARY_KEYS = ("peak_memory_mb", "mean_memory_mb", "mean_cpu_percent", "max_threads",
                "disk_read_mb", "disk_write_mb", "mean_gpu_percent", "peak_gpu_memory_mb",
                "peak_spark_storage_mb", "samples", "interval_s", "overhead_cpu_s")


class _Group:
    """The worker's process tree: CPU, memory, disk and threads summed over its members."""

    def __init__(self, psutil: Any, root_pid: int) -> None:
        self.psutil = psutil
        self.root = psutil.Process(root_pid)
        self.members: dict[int, Any] = {}
        self.cpu: dict[int, float] = {}          # pid -> CPU seconds at the previous sample
        self.io_base: dict[int, tuple[int, int]] = {}   # pid -> (read, write) when first seen
        self.io_last: dict[int, tuple[int, int]] = {}
        self.io_gone = [0, 0]                    # bytes of members that have exited
        self.io_ok = True
        self._refresh(first=True)

    def _refresh(self, first: bool = False) -> None:
        try:
            found = [self.root, *self.root.children(recursive=True)]
        except self.psutil.Error:
            found = [self.root]
        fresh = {p.pid: self.members.get(p.pid, p) for p in found}
        for pid in set(self.members) - set(fresh):
            self._forget(pid)
        self.members = fresh
        if first:   # what the members had read and written before the run is not the run's
            for pid, proc in fresh.items():
                io = self._io(proc)
                if io is not None:
                    self.io_base[pid] = io

    def _forget(self, pid: int) -> None:
        last, base = self.io_last.pop(pid, None), self.io_base.pop(pid, (0, 0))
        if last is not None:
            self.io_gone[0] += last[0] - base[0]
            self.io_gone[1] += last[1] - base[1]
        self.cpu.pop(pid, None)

    def _io(self, proc: Any) -> Optional[tuple[int, int]]:
        if not self.io_ok:
            return None
        try:
            io = proc.io_counters()
        except (AttributeError, NotImplementedError):   # not on this platform
            self.io_ok = False
            return None
        except self.psutil.Error:
            return None
        return io.read_bytes, io.write_bytes

    def sample(self, refresh: bool) -> tuple[float, int, int, Optional[tuple[int, int]]]:
        """(CPU seconds used since the last sample, RSS bytes, threads, (read, write) bytes)."""
        if refresh:
            self._refresh()
        used, rss, threads = 0.0, 0, 0
        for pid, proc in list(self.members.items()):
            try:
                with proc.oneshot():
                    times = proc.cpu_times()
                    rss += proc.memory_info().rss
                    threads += proc.num_threads()
                    io = self._io(proc)
            except self.psutil.Error:   # exited between the walk and now
                self._forget(pid)
                del self.members[pid]
                continue
            total = times.user + times.system
            used += max(0.0, total - self.cpu.get(pid, total))
            self.cpu[pid] = total
            if io is not None:
                self.io_last[pid] = io
        disk = None
        if self.io_ok:
            read = self.io_gone[0] + sum(v[0] - self.io_base.get(p, (0, 0))[0] for p, v in self.io_last.items())
            write = self.io_gone[1] + sum(v[1] - self.io_base.get(p, (0, 0))[1] for p, v in self.io_last.items())
            disk = (read, write)
        return used, rss, threads, disk


class _Gpus:
    """The run's leased GPUs through NVML: CUDA_VISIBLE_DEVICES names them (indices in PCI bus
    order, as the dispatcher leases them, or UUIDs); all of them when it is unset."""

    def __init__(self) -> None:
        import pynvml   # nvidia-ml-py

        pynvml.nvmlInit()
        self.nvml = pynvml
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        entries = ([e.strip() for e in visible.split(",") if e.strip()] if visible is not None
                   else [str(i) for i in range(pynvml.nvmlDeviceGetCount())])
        self.handles: list[tuple[str, Any]] = []
        for entry in entries:
            handle = (pynvml.nvmlDeviceGetHandleByIndex(int(entry)) if entry.isdigit()
                      else pynvml.nvmlDeviceGetHandleByUUID(entry))
            self.handles.append((entry if entry.isdigit() else str(len(self.handles)), handle))

    def sample(self) -> list[tuple[str, float, float]]:
        out = []
        for name, handle in self.handles:
            util = self.nvml.nvmlDeviceGetUtilizationRates(handle).gpu
            memory = self.nvml.nvmlDeviceGetMemoryInfo(handle).used / MB
            out.append((name, float(util), float(memory)))
        return out

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except Exception:
            pass


def _spark_storage() -> Optional[Callable[[], Optional[float]]]:
    """The executors' storage memory in use (MB) as Spark's status tracker reports it, when this
    process is a Spark driver; None otherwise."""
    if "pyspark" not in sys.modules:
        return None
    from pyspark import SparkContext

    def read() -> Optional[float]:
        sc = SparkContext._active_spark_context
        if sc is None:
            return None
        infos = sc._jsc.sc().statusTracker().getExecutorInfos()
        return sum(i.usedOnHeapStorageMemory() + i.usedOffHeapStorageMemory() for i in infos) / MB

    return read


class SystemSampler:
    """Samples every `interval_s` on a daemon thread into `writer` (series `system/...`); `cores`
    is how many cores the run was given (CPU % is of those). `stop()` takes a last sample, ends the
    thread and returns the summary."""

    def __init__(self, writer: SeriesWriter, *, interval_s: float, cores: int, device: str = "cpu",
                 root_pid: Optional[int] = None) -> None:
        import psutil

        self.writer = writer
        self.interval_s = float(interval_s)
        self.cores = max(1, int(cores))
        self.group = _Group(psutil, root_pid or os.getpid())
        self.gpus: Optional[_Gpus] = None
        self.notes: list[str] = []
        if device.startswith("cuda"):
            try:
                self.gpus = _Gpus()
            except ImportError:
                self.notes.append("GPUs not sampled: nvidia-ml-py is not installed in the run's "
                                  "environment (pip install nvidia-ml-py)")
            except Exception as exc:   # no driver, no device: the run goes on without
                self.notes.append(f"GPUs not sampled: NVML: {exc}")
        self.spark = _spark_storage()
        self.step = 0
        self.started = self.last = time.monotonic()
        self.cpu_percent: list[float] = []
        self.memory: list[int] = []
        self.threads: list[int] = []
        self.gpu_util: list[float] = []
        self.gpu_memory: list[float] = []
        self.spark_storage: list[float] = []
        self.disk: Optional[tuple[int, int]] = None
        self.own_cpu_s = 0.0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="system-metrics", daemon=True)

    def start(self) -> "SystemSampler":
        self.sample()   # memory and threads at the start; CPU needs two samples
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except Exception:   # a sampling bug must never fail the run
                log.warning("system metrics: a sample failed; sampling stops", exc_info=True)
                return

    def sample(self) -> None:
        with self._lock:
            began = time.thread_time()
            now = time.monotonic()
            used, rss, threads, disk = self.group.sample(refresh=self.step % MEMBERS_EVERY == 0)
            point = self.writer.sample
            step = self.step
            if step:
                elapsed = max(now - self.last, 1e-6)
                cpu = 100.0 * used / elapsed / self.cores
                self.cpu_percent.append(cpu)
                point(SYSTEM_PREFIX + "cpu_percent", round(cpu, 2), step)
            self.memory.append(rss)
            self.threads.append(threads)
            point(SYSTEM_PREFIX + "memory_mb", round(rss / MB, 2), step)
            point(SYSTEM_PREFIX + "threads", threads, step)
            if disk is not None:
                self.disk = disk
                point(SYSTEM_PREFIX + "disk_read_mb", round(disk[0] / MB, 3), step)
                point(SYSTEM_PREFIX + "disk_write_mb", round(disk[1] / MB, 3), step)
            if self.gpus is not None:
                for name, util, memory in self.gpus.sample():
                    self.gpu_util.append(util)
                    self.gpu_memory.append(memory)
                    point(f"{SYSTEM_PREFIX}gpu{name}/utilization_percent", util, step)
                    point(f"{SYSTEM_PREFIX}gpu{name}/memory_mb", round(memory, 1), step)
            if self.spark is not None:
                try:
                    storage = self.spark()
                except Exception:   # the context stopping under us: Spark's memory no more
                    self.spark = None
                    storage = None
                if storage is not None:
                    self.spark_storage.append(storage)
                    point(SYSTEM_PREFIX + "spark_storage_mb", round(storage, 2), step)
            self.last = now
            self.step += 1
            self.own_cpu_s += time.thread_time() - began

    def stop(self) -> dict[str, Any]:
        """The last sample, then the summary; idempotent."""
        if not self._stop.is_set():
            self._stop.set()
            if self._thread.is_alive():
                self._thread.join(timeout=10)
            try:
                self.sample()
            except Exception:
                log.warning("system metrics: the last sample failed", exc_info=True)
            if self.gpus is not None:
                self.gpus.close()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        def mean(values: list[float]) -> Optional[float]:
            return round(sum(values) / len(values), 2) if values else None

        out: dict[str, Any] = {
            "sampled": True, "interval_s": self.interval_s, "samples": self.step,
            "cores": self.cores, "wall_s": round(self.last - self.started, 3),
            "peak_memory_mb": round(max(self.memory) / MB, 2) if self.memory else None,
            "mean_memory_mb": round(sum(self.memory) / len(self.memory) / MB, 2) if self.memory else None,
            "mean_cpu_percent": mean(self.cpu_percent),
            "max_threads": max(self.threads) if self.threads else None,
            "overhead_cpu_s": round(self.own_cpu_s, 4)}
        if self.disk is not None:
            out["disk_read_mb"] = round(self.disk[0] / MB, 3)
            out["disk_write_mb"] = round(self.disk[1] / MB, 3)
        if self.gpus is not None:
            out["gpus"] = [name for name, _ in self.gpus.handles]
            out["mean_gpu_percent"] = mean(self.gpu_util)
            out["peak_gpu_memory_mb"] = round(max(self.gpu_memory), 1) if self.gpu_memory else None
        if self.spark_storage:
            out["peak_spark_storage_mb"] = round(max(self.spark_storage), 2)
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def start_sampler(writer: SeriesWriter, *, interval_s: Optional[float], cores: int,
                  device: str) -> tuple[Optional[SystemSampler], dict[str, Any]]:
    """A started sampler, or None and the summary saying why nothing is sampled (turned off with
    0, psutil missing from the run's environment)."""
    interval = DEFAULT_INTERVAL_S if interval_s is None else float(interval_s)
    if interval <= 0:
        return None, {"sampled": False, "reason": "turned off (systemMetricsIntervalSeconds 0)"}
    try:
        sampler = SystemSampler(writer, interval_s=interval, cores=cores, device=device)
    except ImportError:
        return None, {"sampled": False, "reason": "psutil is not installed in the run's "
                                                  "environment (pip install psutil)"}
    return sampler.start(), {}
