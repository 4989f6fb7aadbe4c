"""The retail-sales engine's names: the data schema, the feature and metric names, the defaults.

Kept free of numpy, pandas and torch, so that loading the engine class (to read its kind and
parameter schemas, as the `run` CLI does before it starts a worker) stays cheap.
"""
from __future__ import annotations

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

METRIC_NAMES = ("MAPE", "MAE", "RMSE", "MASE")


def label_column(target: str) -> str:
    return target + LABEL_SUFFIX
