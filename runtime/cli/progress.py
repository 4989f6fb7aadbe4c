"""What `run train|score|fp` shows while a run works: a live progress line on a terminal, plain
log lines otherwise, nothing with --quiet.

`RunConsole` is the `echo` the backend copies the worker's output into. On a terminal it keeps one
status line at the bottom (stage, epochs and batches with a bar, the latest metrics, the time),
redrawn from the run folder's progress.json, and prints log lines above it. The worker's own
closing summary is left to the log file: the command prints the summary once, at the end.
"""
from __future__ import annotations

import re
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Optional, TextIO

from ..metrics_series import read_progress
from ..numbers import readable

# The worker's summary block: `run ID STATE: ...` then indented lines (runtime/worker.py _summary).
_SUMMARY_START = re.compile(r"^run \S+ (DONE|FAILED|ABORTED): ")
# Progress lines the worker logs for its log file (runtime.metrics_series.SeriesProgress).
_PROGRESS_LINE = re.compile(r" INFO runtime\.progress: ")
_SPIN = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class RunConsole:
    def __init__(self, stream: TextIO = sys.stderr, *, quiet: bool = False,
                 live: Optional[bool] = None, refresh_s: float = 0.2) -> None:
        self.stream = stream
        self.quiet = quiet
        isatty = getattr(stream, "isatty", lambda: False)
        self.live = (isatty() if live is None else live) and not quiet
        self.refresh_s = refresh_s
        self._lock = threading.Lock()
        self._partial = ""
        self._in_summary = False
        self._shown = ""                 # the status line now on screen
        self._run_dir: Optional[Path] = None
        self._started = time.monotonic()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._frame = 0

    # -- the backend's echo ----------------------------------------------------------------------

    def write(self, text: str) -> int:
        if self.quiet:
            return len(text)
        data = self._partial + text
        lines = data.split("\n")
        self._partial = lines.pop()
        for line in lines:
            self._line(line)
        return len(text)

    def flush(self) -> None:
        if not self.quiet:
            try:
                self.stream.flush()
            except (OSError, ValueError):
                pass

    def _line(self, line: str) -> None:
        if _SUMMARY_START.match(line):
            self._in_summary = True
            return
        if self._in_summary:
            if line.startswith("  "):
                return
            self._in_summary = False
        if self.live and _PROGRESS_LINE.search(line):
            return   # the status line shows it
        with self._lock:
            self._clear()
            self.stream.write(line + "\n")
            self._draw()

    # -- the status line -------------------------------------------------------------------------

    def follow(self, run_dir: Path) -> None:
        """Starts redrawing the status line from `run_dir`'s progress (terminal only)."""
        self._run_dir = Path(run_dir)
        self._started = time.monotonic()
        if self.live and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="progress", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.refresh_s):
            with self._lock:
                self._frame += 1
                self._draw()

    def status_text(self, width: int = 100) -> str:
        """The live line: spinner, stage, the outermost loop with a bar, the loss, the time, then
        inner loops, row counts and other metrics; what does not fit the width is left out,
        least important first."""
        progress = read_progress(self._run_dir) if self._run_dir else None
        elapsed = time.monotonic() - self._started
        pieces: list[tuple[int, str]] = [(0, _SPIN[self._frame % len(_SPIN)])]   # (rank, text)
        if progress and progress.get("stage"):
            pieces.append((1, str(progress["stage"])))
        drawn = False   # the outermost loop gets the bar; inner ones their counts
        for bar in (progress or {}).get("bars") or []:
            n, total = int(bar.get("n") or 0), int(bar.get("total") or 0)
            if total and not drawn:
                pieces.append((1, f"{bar['desc']} {n}/{total} {_bar(n / total)} {100 * n // total}%"))
                drawn = True
            elif total:
                pieces.append((4, f"{bar['desc']} {n}/{total}"))
            else:   # a count without a total: rows read or written
                pieces.append((5, f"{bar['desc']} {n:,}"))
        metrics = sorted(((progress or {}).get("metrics") or {}).items(),
                         key=lambda item: ("loss" not in item[0].lower(), item[0]))
        for name, point in metrics:
            if point.get("value") is not None:
                rank = 2 if "loss" in name.lower() else 6
                pieces.append((rank, f"{name} {readable(point['value'])}"))
        pieces.append((3, f"{elapsed:.1f} s"))
        while len(pieces) > 1 and len(" · ".join(t for _, t in pieces)) > width:
            pieces.remove(max(reversed(pieces), key=lambda p: p[0]))
        text = " · ".join(t for _, t in pieces)
        return text if len(text) <= width else text[:width - 1] + "…"

    def _draw(self) -> None:
        if not self.live or self._stop.is_set() or self._run_dir is None:
            return
        width = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
        text = self.status_text(width)
        try:
            self.stream.write("\r" + text + "\x1b[K")
            self.stream.flush()
        except (OSError, ValueError):
            return
        self._shown = text

    def _clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self._shown = ""

    def close(self) -> None:
        """Stops the status line and leaves the terminal clean for the summary."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self._lock:
            if self._partial and not self.quiet:
                self._line(self._partial)
                self._partial = ""
            if self.live:
                self._clear()
            self.flush()


def _bar(fraction: float, width: int = 20) -> str:
    fraction = min(1.0, max(0.0, fraction))
    full = int(fraction * width)
    return "[" + "#" * full + "." * (width - full) + "]"
