"""A deterministic synthetic stand-in for the retail-sales sample data, with the same schema.

Weekly rows per store from 2010-02-05 (Fridays), store types A/B/C, yearly seasonality with the
US holiday weeks the real data flags (Super Bowl, Labor Day, Thanksgiving, Christmas), per-store
trend and autocorrelated noise. Same seed, same frame, on every platform (numpy's PCG64).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from runtime.errors import ConfigError

START = pd.Timestamp("2010-02-05")
COLUMNS = ("date", "store", "storeType", "weeklySales", "storeSize", "temperature",
           "regionalFuelPrice", "markdown", "cpi", "unemployment", "isHoliday")
_TYPE_SHARE = (("A", 22), ("B", 17), ("C", 6))  # the real data's 45 stores
_SIZES = {"A": (150_000, 220_000), "B": (35_000, 140_000), "C": (35_000, 45_000)}
_SALES_PER_SQFT = {"A": 8.0, "B": 10.0, "C": 12.0}


def holiday_flags(dates: pd.DatetimeIndex) -> np.ndarray:
    """The Fridays that close Super Bowl, Labor Day, Thanksgiving and Christmas weeks."""
    month, day = dates.month, dates.day
    return np.asarray(((month == 2) & (day >= 8) & (day <= 14))
                      | ((month == 9) & (day >= 5) & (day <= 11))
                      | ((month == 11) & (day >= 23) & (day <= 29))
                      | ((month == 12) & (day >= 25)))


def _seasonal_factor(dates: pd.DatetimeIndex) -> np.ndarray:
    """Multiplicative calendar effect shared by all stores (before per-store amplitude)."""
    doy = dates.day_of_year.to_numpy(dtype="float64")
    month, day = dates.month, dates.day
    log_effect = 0.04 * np.sin(2 * np.pi * (doy - 80) / 365.25)        # spring/summer high
    log_effect += np.where(month == 1, -0.10, 0.0)                     # January lull
    log_effect += np.where((month == 11) & (day >= 23) & (day <= 29), 0.33, 0.0)  # Black Friday
    log_effect += np.where((month == 12) & (day >= 11) & (day <= 17), 0.18, 0.0)
    log_effect += np.where((month == 12) & (day >= 18) & (day <= 24), 0.45, 0.0)  # Christmas rush
    log_effect += np.where((month == 12) & (day >= 25), -0.08, 0.0)
    log_effect += np.where((month == 2) & (day >= 8) & (day <= 14), 0.05, 0.0)    # Super Bowl
    return log_effect


def generate_retail(seed: int, stores: int = 45, weeks: int = 143) -> pd.DataFrame:
    """Synthetic retail rows sorted by date then store: `date` datetime64, `isHoliday` bool,
    `markdown` spelt as in the platform's schema."""
    if stores < 1 or weeks < 1:
        raise ConfigError(f"generate_retail needs at least one store and one week, got {stores}, {weeks}")
    rng = np.random.default_rng(seed)
    dates = pd.date_range(START, periods=weeks, freq="7D")
    t = np.arange(weeks, dtype="float64")[:, None]                    # weeks x 1

    pool = np.concatenate([[kind] * share for kind, share in _TYPE_SHARE])
    types = rng.permutation(np.resize(pool, stores)) if stores != len(pool) else rng.permutation(pool)
    low = np.array([_SIZES[k][0] for k in types], dtype="float64")
    high = np.array([_SIZES[k][1] for k in types], dtype="float64")
    size = np.round(rng.uniform(low, high)).astype("int64")
    level = size * np.array([_SALES_PER_SQFT[k] for k in types]) * rng.lognormal(0.0, 0.25, stores)

    growth = rng.normal(0.0, 0.04, stores) / 52.0                      # log growth per week
    amplitude = rng.uniform(0.6, 1.4, stores)                          # per-store holiday sensitivity
    season = _seasonal_factor(dates)[:, None] * amplitude[None, :]
    ar = np.zeros((weeks, stores))
    shocks = rng.normal(0.0, 0.02, (weeks, stores))
    for w in range(1, weeks):                                          # AR(1) over weeks, vectorised over stores
        ar[w] = 0.7 * ar[w - 1] + shocks[w]
    noise = rng.normal(0.0, 0.015, (weeks, stores))
    sales = level[None, :] * np.exp(growth[None, :] * t + season + ar + noise)

    doy = dates.day_of_year.to_numpy(dtype="float64")[:, None]
    climate = rng.uniform(-15, 15, stores)[None, :]
    temperature = 60 + climate - 22 * np.cos(2 * np.pi * (doy - 15) / 365.25) + rng.normal(0, 5, (weeks, stores))
    fuel_path = 2.6 + np.cumsum(rng.normal(0.008, 0.04, weeks))[:, None]
    fuel = fuel_path + rng.uniform(-0.15, 0.25, stores)[None, :]
    markdown_on = np.asarray(dates >= pd.Timestamp("2011-11-11"))[:, None]
    markdown = np.where(markdown_on, np.round(rng.gamma(1.5, 4000.0, (weeks, stores)), 2), 0.0)
    cpi = rng.uniform(126, 212, stores)[None, :] * (1 + 0.0005 * t) + rng.normal(0, 0.05, (weeks, stores))
    unemployment = rng.uniform(4.0, 13.5, stores)[None, :] + np.cumsum(rng.normal(-0.01, 0.03, (weeks, stores)), 0)

    flat = lambda a: np.asarray(a, dtype="float64").reshape(-1)  # noqa: E731 - row order: week-major
    frame = pd.DataFrame({
        "date": np.repeat(dates.to_numpy(), stores),
        "store": np.tile(np.arange(1, stores + 1, dtype="int64"), weeks),
        "storeType": np.tile(types, weeks),
        "weeklySales": np.round(flat(sales), 2),
        "storeSize": np.tile(size, weeks),
        "temperature": np.round(flat(temperature), 2),
        "regionalFuelPrice": np.round(flat(np.broadcast_to(fuel, (weeks, stores))), 3),
        "markdown": flat(markdown),
        "cpi": np.round(flat(cpi), 7),
        "unemployment": np.round(flat(np.clip(unemployment, 2.0, 20.0)), 3),
        "isHoliday": np.repeat(holiday_flags(dates), stores),
    })
    return frame[list(COLUMNS)]


def _as_csv(frame: pd.DataFrame) -> pd.DataFrame:
    """The real CSVs' spelling: M/D/YY dates, `markDown`, TRUE/FALSE."""
    out = frame.rename(columns={"markdown": "markDown"})
    out["date"] = [f"{d.month}/{d.day}/{d.year % 100:02d}" for d in frame["date"]]
    out["isHoliday"] = np.where(frame["isHoliday"], "TRUE", "FALSE")
    return out


def _as_parquet(frame: pd.DataFrame) -> pd.DataFrame:
    """The platform's Parquet spelling: M/D/YY date strings, `markdown`, boolean isHoliday."""
    out = frame.copy()
    out["date"] = [f"{d.month}/{d.day}/{d.year % 100:02d}" for d in frame["date"]]
    return out


def write_retail_dataset(out_dir: Path, seed: int = 0, *, stores: int = 45, weeks: int = 143,
                         scoring_weeks: int = 30, overlap_weeks: int = 2) -> dict[str, Path]:
    """Write all rows, a training file and a scoring file (the last `scoring_weeks`, overlapping
    the training file by `overlap_weeks`, as the sample's split does) in CSV and Parquet.

    Returns {"all.csv", "training.csv", "scoring.csv", "all.parquet", "training.parquet",
    "scoring.parquet"} -> path; file names follow the sample data's."""
    if not 0 < scoring_weeks < weeks or not 0 <= overlap_weeks < weeks - scoring_weeks:
        raise ConfigError(f"Cannot split {weeks} weeks into {scoring_weeks} scoring weeks "
                          f"with {overlap_weeks} overlapping")
    frame = generate_retail(seed, stores=stores, weeks=weeks)
    dates = np.sort(frame["date"].unique())
    scoring_start = dates[weeks - scoring_weeks]
    training_end = dates[weeks - scoring_weeks + overlap_weeks - 1]
    parts = {"all": frame,
             "training": frame[frame["date"] <= training_end],
             "scoring": frame[frame["date"] >= scoring_start]}
    names = {"all": ("retail.csv", "DSWRetailSales.parquet"),
             "training": ("retail-training.csv", "DSWRetailSales-Training.parquet"),
             "scoring": ("retail-scoring.csv", "DSWRetailSales-Scoring.parquet")}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for part, rows in parts.items():
        csv_name, parquet_name = names[part]
        _as_csv(rows).to_csv(out_dir / csv_name, index=False)
        _as_parquet(rows).to_parquet(out_dir / parquet_name, index=False)
        paths[f"{part}.csv"] = out_dir / csv_name
        paths[f"{part}.parquet"] = out_dir / parquet_name
    return paths
