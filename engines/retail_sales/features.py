"""The retail-sales feature pipeline: raw weekly store rows in, scale-free forecasting features out.

Everything is vectorised: a value "k weeks before" is looked up by (store, date - 7k days), through
one packed int64 key per row, so missing weeks give missing features instead of silently shifted ones.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from runtime.errors import ConfigError

from .schema import (CALENDAR_FEATURES, DEFAULT_INPUT_FEATURES, HISTORY_FEATURES, LABEL_SUFFIX,  # noqa: F401
                     REQUIRED, SCHEMA, STORE_FEATURES, STORE_TYPES, label_column)

# Keys leave this many days of room before each store's first day and after its last, so that
# "k weeks before" (k <= 59) and "a week after" of any row stay within the row's own store.
_KEY_MARGIN_DAYS = 7 * 60


def normalise_columns(data: pd.DataFrame) -> pd.DataFrame:
    """Columns renamed to the schema's spelling (`markDown`, `MARKDOWN` -> `markdown`); others kept.

    The result shares the caller's column data (pandas copies on write): assigning a column to it
    leaves the caller's frame as it was."""
    canonical = {name.lower(): name for name in SCHEMA}
    renames: dict[str, str] = {}
    for column in data.columns:
        target = canonical.get(str(column).lower())
        if target is not None and column != target:
            if target in data.columns or target in renames.values():
                raise ConfigError(f"Columns {column!r} and {target!r} differ only in case")
            renames[column] = target
    frame = data.rename(columns=renames) if renames else data.copy(deep=False)
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ConfigError(f"Retail data lacks column(s) {', '.join(missing)}; "
                          f"expected the schema {', '.join(SCHEMA)}")
    return frame


def parse_dates(values: pd.Series) -> pd.Series:
    """Dates as datetime64 at midnight: the CSVs' M/D/YY, or anything ISO-like. Rows are weekly, and
    weeks are looked up by day, so a time of day is dropped whatever the input's type."""
    if pd.api.types.is_datetime64_any_dtype(values):
        if values.dt.tz is not None:
            values = values.dt.tz_localize(None)
        if values.isna().any():
            raise ConfigError("Retail data has a row without a date")
        return values.dt.normalize()
    text = values.astype(str).str.strip()
    parsed = pd.to_datetime(text, format="%m/%d/%y", errors="coerce")
    rest = parsed.isna()
    if rest.any():
        parsed[rest] = pd.to_datetime(text[rest], format="mixed", errors="coerce")
    if parsed.isna().any():
        bad = text[parsed.isna()].iloc[0]
        raise ConfigError(f"Cannot parse date {bad!r}: expected M/D/YY or an ISO date")
    return parsed.dt.normalize()


def parse_flags(values: pd.Series) -> pd.Series:
    """`isHoliday` as bool from bools, 0/1 or TRUE/FALSE strings (any case)."""
    if pd.api.types.is_bool_dtype(values):
        return values.astype(bool)
    text = values.astype(str).str.strip().str.lower()
    truthy = text.isin(("true", "1", "1.0", "yes", "t", "y"))
    # pandas >= 3 keeps a missing value missing through astype(str): it is as false as "nan" is
    falsy = text.isin(("false", "0", "0.0", "no", "f", "n", "nan", "none", "<na>", "")) | text.isna()
    if not (truthy | falsy).all():
        raise ConfigError(f"Cannot read isHoliday value {text[~(truthy | falsy)].iloc[0]!r} as a flag")
    return truthy


def prepare(data: pd.DataFrame) -> pd.DataFrame:
    """Schema spelling, parsed dates and flags, one row per (store, date), sorted."""
    frame = normalise_columns(data)
    frame["date"] = parse_dates(frame["date"])
    frame["store"] = pd.to_numeric(frame["store"], errors="raise").astype("int64")
    if "isHoliday" in frame.columns:
        frame["isHoliday"] = parse_flags(frame["isHoliday"])
    return sort_by_store_date(frame)


def sort_by_store_date(frame: pd.DataFrame) -> pd.DataFrame:
    """A prepared frame's rows ordered by store then date, with a fresh index; refuses two rows
    for the same store and date."""
    (key,) = store_day_keys(frame)
    order = np.argsort(key, kind="stable")
    ordered = key[order]
    if len(ordered) > 1 and (ordered[1:] == ordered[:-1]).any():
        raise ConfigError("Retail data has more than one row for the same store and date")
    if (order[1:] > order[:-1]).all():  # already in order: no need to move every column
        return frame.reset_index(drop=True)
    return frame.take(order).reset_index(drop=True)


def _days(dates: pd.Series) -> np.ndarray:
    return dates.to_numpy(dtype="datetime64[D]").astype("int64")


def store_day_keys(*frames: pd.DataFrame) -> list[np.ndarray]:
    """One int64 per row of each prepared frame, on one scale shared by all of them: ordered as
    (store, date), equal exactly for the same store and day, and with `_KEY_MARGIN_DAYS` of room
    on either side of each store's days (so a key minus 7k days never reaches another store)."""
    stores = [f["store"].to_numpy(dtype="int64") for f in frames]
    days = [_days(f["date"]) for f in frames]
    present = [i for i, d in enumerate(days) if len(d)]
    if not present:
        return [np.zeros(0, dtype="int64") for _ in frames]
    first_day = min(int(days[i].min()) for i in present) - _KEY_MARGIN_DAYS
    span = max(int(days[i].max()) for i in present) + _KEY_MARGIN_DAYS + 1 - first_day
    low = min(int(stores[i].min()) for i in present)
    high = max(int(stores[i].max()) for i in present)
    if (high - low + 1) * span < 2 ** 62:
        codes = [s - low for s in stores]
    else:  # store ids too far apart to scale: rank them instead
        ids = np.unique(np.concatenate(stores))
        codes = [np.searchsorted(ids, s) for s in stores]
    return [c * span + (d - first_day) for c, d in zip(codes, days)]


def build_features(data: pd.DataFrame, target: str = "weeklySales", *, prepared: bool = False) -> pd.DataFrame:
    """The feature frame: the prepared input columns plus the features and the label
    `<target>Ahead` (next week's value of the same store; missing on each store's last week).

    `prepared=True` says `data` already is `prepare`'s output (or rows of such frames put back in
    order by `sort_by_store_date`), so it is used as it is."""
    frame = data.copy(deep=False) if prepared else prepare(data)
    if target not in frame.columns:
        raise ConfigError(f"Retail data lacks the target column {target!r}")
    y = pd.to_numeric(frame[target], errors="coerce").astype("float64")
    frame[target] = y
    y_values = y.to_numpy(dtype="float64")
    n = len(frame)

    # The rows are sorted by (store, day) and unique, so a packed key finds "k weeks before" by
    # position: weekly rows without gaps put it exactly k rows up; only where that row is not the
    # wanted week, yet the wanted day lies within the store's own days, is the key searched for.
    (key,) = store_day_keys(frame)
    stores = frame["store"].to_numpy(dtype="int64")
    starts = np.flatnonzero(np.r_[True, stores[1:] != stores[:-1]]) if n else np.zeros(0, dtype="int64")
    lengths = np.diff(np.r_[starts, n])
    first_key = np.repeat(key[starts], lengths)
    last_key = np.repeat(key[starts + lengths - 1], lengths)

    def positions(k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Where row i's week k weeks before (k < 0: after) is: `shifted[i]` if it is row i - k,
        else row `source[j]` for row `rows[j]`, else nowhere."""
        shifted = np.zeros(n, dtype=bool)
        if 0 < abs(k) < n:  # keys differ by exactly 7k days only within one store
            if k > 0:
                shifted[k:] = key[k:] - key[:-k] == 7 * k
            else:
                shifted[:k] = key[-k:] - key[:k] == -7 * k
        miss = np.flatnonzero(~shifted)
        wanted = key[miss] - 7 * k
        inside = (wanted >= first_key[miss]) & (wanted <= last_key[miss])
        rows, wanted = miss[inside], wanted[inside]
        source = np.minimum(np.searchsorted(key, wanted), n - 1)
        exact = key[source] == wanted
        return shifted, rows[exact], source[exact]

    def weeks_before(values: np.ndarray, k: int) -> np.ndarray:
        shifted, rows, source = found[k]
        out = np.full(n, np.nan)
        if 0 < k < n:
            np.copyto(out[k:], values[:-k], where=shifted[k:])
        elif 0 < -k < n:
            np.copyto(out[:k], values[-k:], where=shifted[:k])
        out[rows] = values[source]
        return out

    # Ratios are taken in logs of positive sales; a non-positive value has no ratio.
    def log_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.log(a / b)
        out[~np.isfinite(out)] = np.nan
        return out

    found = {k: positions(k) for k in (*range(1, 8), 51, *range(52, 60), -1)}
    lag = {k: weeks_before(y_values, k) for k in found if k > 0}
    lag[0] = y_values
    yt = lag[0]
    frame[target + LABEL_SUFFIX] = weeks_before(y_values, -1)
    features: dict[str, np.ndarray] = {}
    for k in (1, 2, 3):
        features[f"lag{k}Ratio"] = log_ratio(lag[k], yt)

    def mean_of(first: int, w: int) -> np.ndarray:
        # Summed in order, as np.mean over the stacked lags does, without stacking them.
        total = lag[first] + lag[first + 1]
        for k in range(first + 2, first + w):
            total += lag[k]
        return total / w

    now = {w: mean_of(0, w) for w in (4, 8)}
    for w in (4, 8):
        features[f"mean{w}Ratio"] = log_ratio(now[w], yt)
    features["lastYearNextRatio"] = log_ratio(lag[51], yt)
    features["lastYearStep"] = log_ratio(lag[51], lag[52])
    features["yoyRatio"] = log_ratio(yt, lag[52])
    for w in (4, 8):
        features[f"yoy{w}Ratio"] = log_ratio(now[w], mean_of(52, w))

    holiday = frame["isHoliday"].to_numpy(dtype="float64") if "isHoliday" in frame.columns \
        else np.zeros(n)
    features["lastYearNextHoliday"] = np.nan_to_num(weeks_before(holiday, 51), nan=0.0)
    features["hasHistory"] = np.isfinite(features["lastYearNextRatio"]
                                         + features["yoy8Ratio"]).astype("float64")
    week = _iso_weeks(frame["date"])
    features["weekOfYear"] = week
    features["weekSin"] = np.sin(2 * np.pi * week / 52.0)
    features["weekCos"] = np.cos(2 * np.pi * week / 52.0)
    features["holiday"] = holiday
    if "storeType" in frame.columns:
        # The string clean-up runs on the few distinct values, not on every row.
        codes, kinds = pd.factorize(frame["storeType"])
        kinds = pd.Series(kinds, dtype=object).astype(str).str.strip().str.upper().to_numpy()
        for t in STORE_TYPES:
            features[f"storeType_{t}"] = np.isin(codes, np.flatnonzero(kinds == t)).astype("float64")
    if "storeSize" in frame.columns:
        size = pd.to_numeric(frame["storeSize"], errors="coerce").to_numpy(dtype="float64")
        features["logStoreSize"] = log_ratio(size, np.ones_like(size))
    # Every column handed over as it is: a concat (or a frame of the new columns alone) stacks
    # same-typed columns into one block, a copy of the whole frame (a tenth of a score's time).
    columns: dict[str, Any] = {name: frame[name] for name in frame.columns}
    columns.update(features)
    return pd.DataFrame(columns, index=frame.index, copy=False)


def _iso_weeks(dates: pd.Series) -> np.ndarray:
    """ISO week numbers as float64, from a table over the frame's range of days (dates repeat for
    every store, so this is a gather, not a calendar computation per row)."""
    days = _days(dates)
    if not len(days):
        return np.zeros(0)
    first = int(days.min())
    calendar = pd.DatetimeIndex(np.arange(first, int(days.max()) + 1).astype("datetime64[D]"))
    return calendar.isocalendar().week.to_numpy(dtype="float64")[days - first]


def expand_input_features(names: list[str], columns: pd.Index) -> list[str]:
    """Model input columns for the requested feature names: feature and numeric columns as they are,
    `storeType` as its one-hot columns, `date` as the week's seasonal position."""
    expanded: list[str] = []
    for name in names:
        if name == "storeType":
            parts = [f"storeType_{t}" for t in STORE_TYPES]
        elif name == "date":
            parts = ["weekSin", "weekCos"]
        elif name == "isHoliday":
            parts = ["holiday"]
        else:
            parts = [name]
        for part in parts:
            if part not in columns:
                raise ConfigError(f"Unknown input feature {name!r}; available: "
                                  f"{', '.join(str(c) for c in columns)}")
            if part not in expanded:
                expanded.append(part)
    return expanded
