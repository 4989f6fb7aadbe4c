"""The retail-sales feature pipeline: raw weekly store rows in, scale-free forecasting features out.

Everything is vectorised: a value "k weeks before" is looked up by (store, date - 7k days) through
one index, so missing weeks give missing features instead of silently shifted ones.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from runtime.errors import ConfigError

# The data schema (Adobe's retail-sales sample); matched case-insensitively.
SCHEMA = ("date", "store", "storeType", "weeklySales", "storeSize", "temperature",
          "regionalFuelPrice", "markdown", "cpi", "unemployment", "isHoliday")
REQUIRED = ("date", "store")
STORE_TYPES = ("A", "B", "C")
LABEL_SUFFIX = "Ahead"  # weeklySales -> weeklySalesAhead, the sample recipe's label name

# Features computed from the target's history; the model's default inputs are a subset.
HISTORY_FEATURES = (
    "lag1Ratio", "lag2Ratio", "lag3Ratio",          # log(y[t-k] / y[t])
    "mean4Ratio", "mean8Ratio",                     # log(mean(y[t-w+1..t]) / y[t])
    "lastYearNextRatio",                            # log(y[t-51] / y[t]): last year's next week
    "lastYearStep",                                 # log(y[t-51] / y[t-52]): last year's week-on-week move
    "yoyRatio", "yoy4Ratio", "yoy8Ratio",           # this year vs last year, 1/4/8-week means
    "lastYearNextHoliday",                          # was last year's next week a holiday
    "hasHistory",                                   # 1 where the year-ago features exist
)
CALENDAR_FEATURES = ("weekOfYear", "weekSin", "weekCos", "holiday")
STORE_FEATURES = tuple(f"storeType_{t}" for t in STORE_TYPES) + ("logStoreSize",)

DEFAULT_INPUT_FEATURES = ("lastYearNextRatio", "lastYearStep", "yoy4Ratio", "yoy8Ratio", "yoyRatio",
                          "lag1Ratio", "lag2Ratio", "mean4Ratio", "mean8Ratio", "holiday",
                          "lastYearNextHoliday")

_WEEK = pd.Timedelta(days=7)


def normalise_columns(data: pd.DataFrame) -> pd.DataFrame:
    """Columns renamed to the schema's spelling (`markDown`, `MARKDOWN` -> `markdown`); others kept."""
    canonical = {name.lower(): name for name in SCHEMA}
    renames: dict[str, str] = {}
    for column in data.columns:
        target = canonical.get(str(column).lower())
        if target is not None and column != target:
            if target in data.columns or target in renames.values():
                raise ConfigError(f"Columns {column!r} and {target!r} differ only in case")
            renames[column] = target
    frame = data.rename(columns=renames) if renames else data.copy()
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise ConfigError(f"Retail data lacks column(s) {', '.join(missing)}; "
                          f"expected the schema {', '.join(SCHEMA)}")
    return frame


def parse_dates(values: pd.Series) -> pd.Series:
    """Dates as datetime64: the CSVs' M/D/YY, or anything ISO-like."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values.dt.tz_localize(None) if values.dt.tz is not None else values
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
    falsy = text.isin(("false", "0", "0.0", "no", "f", "n", "nan", "none", "<na>", ""))
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
    if frame.duplicated(["store", "date"]).any():
        raise ConfigError("Retail data has more than one row for the same store and date")
    return frame.sort_values(["store", "date"], kind="stable").reset_index(drop=True)


def build_features(data: pd.DataFrame, target: str = "weeklySales") -> pd.DataFrame:
    """The feature frame: the prepared input columns plus the features and the label
    `<target>Ahead` (next week's value of the same store; missing on each store's last week)."""
    frame = prepare(data)
    if target not in frame.columns:
        raise ConfigError(f"Retail data lacks the target column {target!r}")
    y = pd.to_numeric(frame[target], errors="coerce").astype("float64")
    frame[target] = y
    keys = pd.MultiIndex.from_arrays([frame["store"], frame["date"]])
    by_key = pd.Series(y.to_numpy(), index=keys)

    def weeks_before(series: pd.Series, k: int) -> np.ndarray:
        wanted = pd.MultiIndex.from_arrays([frame["store"], frame["date"] - k * _WEEK])
        return series.reindex(wanted).to_numpy(dtype="float64")

    # Ratios are taken in logs of positive sales; a non-positive value has no ratio.
    def log_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            out = np.log(a / b)
        out[~np.isfinite(out)] = np.nan
        return out

    lag = {k: weeks_before(by_key, k) for k in (*range(0, 8), 50, 51, *range(52, 60))}
    yt = lag[0]
    frame[target + LABEL_SUFFIX] = weeks_before(by_key, -1)
    features: dict[str, np.ndarray] = {}
    for k in (1, 2, 3):
        features[f"lag{k}Ratio"] = log_ratio(lag[k], yt)
    for w in (4, 8):
        features[f"mean{w}Ratio"] = log_ratio(np.mean([lag[k] for k in range(w)], axis=0), yt)
    features["lastYearNextRatio"] = log_ratio(lag[51], yt)
    features["lastYearStep"] = log_ratio(lag[51], lag[52])
    features["yoyRatio"] = log_ratio(yt, lag[52])
    for w in (4, 8):
        now = np.mean([lag[k] for k in range(w)], axis=0)
        year_ago = np.mean([lag[52 + k] for k in range(w)], axis=0)
        features[f"yoy{w}Ratio"] = log_ratio(now, year_ago)

    holiday = frame["isHoliday"].astype("float64") if "isHoliday" in frame.columns \
        else pd.Series(0.0, index=frame.index)
    by_key_holiday = pd.Series(holiday.to_numpy(), index=keys)
    features["lastYearNextHoliday"] = np.nan_to_num(weeks_before(by_key_holiday, 51), nan=0.0)
    features["hasHistory"] = np.isfinite(features["lastYearNextRatio"]
                                         + features["yoy8Ratio"]).astype("float64")
    week = frame["date"].dt.isocalendar().week.to_numpy(dtype="float64")
    features["weekOfYear"] = week
    features["weekSin"] = np.sin(2 * np.pi * week / 52.0)
    features["weekCos"] = np.cos(2 * np.pi * week / 52.0)
    features["holiday"] = holiday.to_numpy()
    if "storeType" in frame.columns:
        kinds = frame["storeType"].astype(str).str.strip().str.upper()
        for t in STORE_TYPES:
            features[f"storeType_{t}"] = (kinds == t).to_numpy(dtype="float64")
    if "storeSize" in frame.columns:
        size = pd.to_numeric(frame["storeSize"], errors="coerce").to_numpy(dtype="float64")
        features["logStoreSize"] = log_ratio(size, np.ones_like(size))
    return pd.concat([frame, pd.DataFrame(features, index=frame.index)], axis=1)


def label_column(target: str) -> str:
    return target + LABEL_SUFFIX


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
