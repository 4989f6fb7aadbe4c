"""Uses pandas 1.x-only API: `Series.dt.week` and positional `dropna(0, ...)` are gone in pandas 2."""
import pandas as pd


def weeks(frame: pd.DataFrame) -> pd.Series:
    frame = frame.dropna(0, how="any")
    return pd.to_datetime(frame["date"]).dt.week


def train(config, data):
    return {"weeks": sorted(set(weeks(data)))}


def score(config, data, model):
    out = data.copy()
    out["week"] = weeks(data)
    return out
