"""Per-step metrics and progress, written by the worker into its run folder without blocking.

`log_metric(name, value, step)` appends to an in-memory list; a daemon thread flushes the list
to `metrics.jsonl` (one JSON object a line) and the live progress to `progress.json` about every
second. The host side (runtime.run_views) ingests the file into the registry: the worker never
opens SQLite. This module imports nothing heavy and no database.
"""
from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Optional

from .numbers import readable

__all__ = ["METRICS_FILE", "PROGRESS_FILE", "SYSTEM_FILE", "SeriesWriter", "SeriesProgress", "read_points",
           "read_progress", "split_metric_args"]

METRICS_FILE = "metrics.jsonl"
SYSTEM_FILE = "system.jsonl"   # the run's system metrics (runtime.sysmetrics), in the same format
PROGRESS_FILE = "progress.json"
FLUSH_S = 0.5


def split_metric_args(step: Any, valueType: Optional[str]) -> tuple[Optional[int], str]:
    """`log_metric(name, value, step)` and the older `log_metric(name, value, "double")` share
    one signature: a string in the step's place is the value type."""
    if isinstance(step, str):
        return None, step if valueType in (None, "double") else valueType
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, (int, float)) or step != int(step):
            raise ValueError(f"A metric's step must be an integer, got {step!r}")
        step = int(step)
    return step, valueType or "double"


class SeriesWriter:
    """Buffers metric points and progress; a background thread writes them every `flush_s`."""

    def __init__(self, run_dir: Path, *, flush_s: float = FLUSH_S) -> None:
        self.run_dir = Path(run_dir)
        self.flush_s = flush_s
        self._points: list[tuple[str, float, int, float]] = []
        self._samples: list[tuple[str, float, int, float]] = []
        self._latest: dict[str, tuple[int, float]] = {}
        self._bars: dict[str, dict[str, Any]] = {}
        self._stage: Optional[str] = None
        self._progress_dirty = False
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._closed = False

    # -- called from the training loop: appends only ------------------------------------------

    def point(self, name: str, value: float, step: int) -> None:
        value = float(value)
        self._points.append((name, value, step, time.time()))
        self._latest[name] = (step, value)
        self._progress_dirty = True
        self._start()

    def sample(self, name: str, value: float, step: int) -> None:
        """A point from another thread (the system metrics' sampler): written like the others but
        to system.jsonl, and neither in the live progress nor in the latest metrics the progress
        lines show."""
        with self._write_lock:
            self._samples.append((name, float(value), step, time.time()))
        self._start()

    def bar(self, desc: str, n: int, total: int) -> None:
        self._bars[desc] = {"desc": desc, "n": n, "total": total}
        self._progress_dirty = True
        self._start()

    def stage(self, name: Optional[str]) -> None:
        self._stage = name
        self._progress_dirty = True
        self._start()

    def latest(self) -> dict[str, tuple[int, float]]:
        return dict(self._latest)

    # -- the writer thread --------------------------------------------------------------------

    def _start(self) -> None:
        if self._thread is None and not self._closed:
            self._thread = threading.Thread(target=self._loop, name="metrics-writer", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_s):
            self.flush()

    def flush(self) -> None:
        with self._write_lock:
            for name, points in ((METRICS_FILE, self._points), (SYSTEM_FILE, self._samples)):
                if not points:
                    continue
                if name == METRICS_FILE:
                    self._points = []
                else:
                    self._samples = []
                lines = "".join(json.dumps({"name": n, "value": _finite(v), "step": s, "ts": round(t, 3)},
                                           separators=(",", ":")) + "\n" for n, v, s, t in points)
                with open(self.run_dir / name, "a", encoding="utf-8") as fh:
                    fh.write(lines)
            if self._progress_dirty:
                self._progress_dirty = False
                state = {"stage": self._stage, "bars": list(self._bars.values()),
                         "metrics": {k: {"step": s, "value": _finite(v)} for k, (s, v) in self._latest.items()},
                         "ts": round(time.time(), 3)}
                path = self.run_dir / PROGRESS_FILE
                tmp = path.with_name(PROGRESS_FILE + ".tmp")
                tmp.write_text(json.dumps(state))
                os.replace(tmp, path)

    def close(self) -> None:
        """Stops the thread and writes what is left; idempotent."""
        self._closed = True
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._points or self._samples or self._progress_dirty:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.flush()


def _finite(value: float) -> Optional[float]:
    return value if math.isfinite(value) else None


class SeriesProgress:
    """A Progress for the engine's loops: shown live (progress.json) and logged at every tenth,
    with the latest metrics, so a log read later shows how training went."""

    def __init__(self, total: int, desc: str, writer: SeriesWriter,
                 logger: Optional[logging.Logger] = None) -> None:
        # Logged as runtime.progress: a terminal that draws the live line hides these lines.
        self.total, self.desc, self.n = int(total or 0), desc, 0
        self._writer = writer
        self._logger = logger or logging.getLogger("runtime.progress")
        self._step = max(1, self.total // 10)
        self._next = self._step
        # Only the outermost loop (epochs, not its batches) goes to the log; the live line shows all.
        self._logs = not any(b["n"] < b["total"] for b in writer._bars.values())
        writer.bar(desc, 0, self.total)

    def update(self, n: int = 1) -> None:
        self.n += n
        self._writer.bar(self.desc, self.n, self.total)
        if self._logs and (self.n >= self._next or self.n == self.total):
            self._log()
            self._next = self.n + self._step

    def _log(self) -> None:
        latest = self._writer.latest()
        shown = "".join(f", {k} {readable(v)}" for k, (_, v) in sorted(latest.items()) if v == v)
        self._logger.info("%s: %d/%d%s", self.desc, self.n, self.total, shown)

    def close(self) -> None:
        if self._logs and self.n and self.n != self.total:
            self._log()


def read_points(path: Path, offset: int = 0) -> tuple[list[dict[str, Any]], int, int]:
    """The points written after byte `offset`: (points, new offset, malformed lines skipped).
    A line still being written (no newline yet) is left for the next read."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], offset, 0
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset, 0
    points, bad = [], 0
    for line in data[:end].splitlines():
        try:
            item = json.loads(line)
            name, step = str(item["name"]), int(item["step"])
            value = item.get("value")
            points.append({"name": name, "step": step,
                           "value": None if value is None else float(value),
                           "ts": float(item.get("ts") or 0.0)})
        except (ValueError, KeyError, TypeError):
            bad += 1
    return points, offset + end + 1, bad


def read_progress(run_dir: Path) -> Optional[dict[str, Any]]:
    try:
        return json.loads((Path(run_dir) / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return None


def latest_by_name(points: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for p in points:
        if p["name"] not in out or p["step"] >= out[p["name"]]["step"]:
            out[p["name"]] = p
    return out
