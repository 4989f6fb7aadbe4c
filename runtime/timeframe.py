"""A run's timeframe: only the last N minutes of its input data set's timestamp column are read.

An MLService's `trainingTimeframe` / `scoringTimeframe` (and a `timeframe` task parameter, as the
platform's recipes take it) become MLRUNTIME_TIMEFRAME in the run's worker environment; the data
set reader (runtime.datasets.read_dataset and scan_dataset) filters the data set it names, so
built-in engines and recipes reading through platform_sdk's DatasetReader see the same rows.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Optional

from .errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd

ENV_TIMEFRAME = "MLRUNTIME_TIMEFRAME"
# Without a `timeframeColumn` parameter, the first of these the data set has is its timestamp.
DEFAULT_COLUMNS = ("timestamp", "_acp_system_metadata.timestamp", "date", "Date")


def parse_minutes(value: Any, where: str = "timeframe") -> float:
    """A timeframe in minutes, checked: a bad value names the key."""
    try:
        minutes = float(value)
    except (TypeError, ValueError):
        minutes = -1.0
    if not minutes > 0:
        raise ConfigError(f"{where} {value!r} is not a positive number of minutes")
    return minutes


@dataclass(frozen=True)
class Timeframe:
    minutes: float
    column: Optional[str]          # None: the first of DEFAULT_COLUMNS the data has
    datasets: tuple[str, ...]      # the data set values and file:// URIs it applies to

    def to_env(self) -> dict[str, str]:
        return {ENV_TIMEFRAME: json.dumps({"minutes": self.minutes, "column": self.column,
                                           "datasets": list(self.datasets)})}

    def applies_to(self, ref: Any) -> bool:
        return ref.id in self.datasets or ref.uri in self.datasets

    # -- filtering ----------------------------------------------------------------------------

    def column_of(self, ref: Any, columns: Iterable[Any]) -> str:
        names = [str(c) for c in columns]
        if self.column:
            if self.column not in names:
                raise ConfigError(f"Data set {ref.id!r} has no timeframe column {self.column!r} "
                                  f"(timeframeColumn); its columns: {', '.join(names)}")
            return self.column
        for name in DEFAULT_COLUMNS:
            if name in names:
                return name
        raise ConfigError(f"Data set {ref.id!r} has no timestamp column for a timeframe of "
                          f"{self.minutes:g} minutes (looked for {', '.join(DEFAULT_COLUMNS)}): "
                          f"name one with the timeframeColumn parameter; its columns: "
                          f"{', '.join(names)}")

    @staticmethod
    def stamps(values: "pd.Series") -> "pd.Series":
        import pandas as pd

        if pd.api.types.is_datetime64_any_dtype(values):
            out = values
        else:
            out = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
        if getattr(out.dt, "tz", None) is None:
            out = out.dt.tz_localize("UTC")
        return out

    def window(self, latest: "pd.Timestamp") -> tuple["pd.Timestamp", "pd.Timestamp"]:
        import pandas as pd

        return latest - pd.Timedelta(minutes=self.minutes), latest

    def apply(self, ref: Any, frame: "pd.DataFrame") -> "pd.DataFrame":
        """The rows of the last `minutes` up to the latest timestamp of the data."""
        column = self.column_of(ref, frame.columns)
        stamps = self.stamps(frame[column])
        if stamps.notna().sum() == 0:
            return frame.iloc[0:0]
        start, end = self.window(stamps.max())
        return frame[(stamps > start) & (stamps <= end)].reset_index(drop=True)

    def scan(self, ref: Any, columns: Optional[list[str]],
             scan: Callable[[Optional[list[str]]], Iterator["pd.DataFrame"]],
             available: list[str]) -> Iterator["pd.DataFrame"]:
        """`scan(columns)` batches, filtered: one pass over the timestamp column finds the latest
        timestamp, a second reads the rows inside the window. `available`: the data set's
        columns."""
        import pandas as pd

        column = self.column_of(ref, available)
        latest = None
        for batch in scan([column]):
            stamps = self.stamps(batch[column])
            if stamps.notna().any():
                top = stamps.max()
                latest = top if latest is None or top > latest else latest
        wanted = None if columns is None else list(dict.fromkeys([*columns, column]))
        yielded = False
        for batch in scan(wanted):
            if latest is None:
                kept = batch.iloc[0:0]
            else:
                start, end = self.window(latest)
                stamps = self.stamps(batch[column])
                kept = batch[(stamps > start) & (stamps <= end)].reset_index(drop=True)
            if columns is not None:
                kept = kept[columns]
            if len(kept) or not yielded:
                yielded = True
                yield kept
        if not yielded:
            yield pd.DataFrame(columns=columns or [])


def timeframe_for(ref: Any) -> Optional[Timeframe]:
    """The run's timeframe if it applies to the data set `ref` (runtime.datasets.DatasetRef)."""
    text = os.environ.get(ENV_TIMEFRAME)
    if not text:
        return None
    try:
        data = json.loads(text)
        timeframe = Timeframe(float(data["minutes"]), data.get("column") or None,
                              tuple(data.get("datasets") or ()))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{ENV_TIMEFRAME} is not a timeframe: {text!r} ({exc})") from None
    return timeframe if timeframe.applies_to(ref) else None
