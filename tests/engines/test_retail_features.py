"""The retail-sales feature pipeline on small hand-made frames."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from engines.retail_sales import RetailSalesEngine
from engines.retail_sales.features import build_features, expand_input_features, prepare
from runtime.engine import default_context
from runtime.errors import ConfigError


def csv_like() -> pd.DataFrame:
    """Two stores, four weeks, the CSV's spelling in odd case, rows out of order; store 2 lacks 2/19/10."""
    rows = [
        ("2/5/10", 1, "A", 100.0, "FALSE"), ("2/12/10", 1, "A", 110.0, "TRUE"),
        ("2/19/10", 1, "A", 121.0, "FALSE"), ("2/26/10", 1, "A", 133.1, "FALSE"),
        ("2/5/10", 2, "c", 200.0, "FALSE"), ("2/12/10", 2, "c", 180.0, "TRUE"),
        ("2/26/10", 2, "c", 145.8, "FALSE"),
    ]
    frame = pd.DataFrame(rows, columns=["Date", "STORE", "storetype", "WeeklySales", "ISHOLIDAY"])
    frame["markDown"] = 0.0
    return frame.sample(frac=1.0, random_state=3).reset_index(drop=True)


def ctx():
    return default_context(RetailSalesEngine, "featurePipeline")


def at(frame: pd.DataFrame, store: int, date: str) -> pd.Series:
    row = frame[(frame["store"] == store) & (frame["date"] == pd.Timestamp(date))]
    assert len(row) == 1
    return row.iloc[0]


def test_columns_matched_case_insensitively_and_csv_values_parsed():
    features = RetailSalesEngine().feature_pipeline(ctx(), csv_like())
    for name in ("date", "store", "storeType", "weeklySales", "isHoliday", "markdown"):
        assert name in features.columns
    assert pd.api.types.is_datetime64_any_dtype(features["date"])
    assert features["date"].min() == pd.Timestamp("2010-02-05")
    assert features["isHoliday"].dtype == bool
    assert at(features, 1, "2010-02-12")["isHoliday"] and not at(features, 1, "2010-02-19")["isHoliday"]
    assert at(features, 2, "2010-02-05")["storeType_C"] == 1.0
    assert at(features, 2, "2010-02-05")["storeType_A"] == 0.0
    # sorted by store then date
    assert list(features["store"]) == [1, 1, 1, 1, 2, 2, 2]


def test_labels_and_lags_stay_within_a_store_and_respect_gaps():
    features = build_features(csv_like())
    assert at(features, 1, "2010-02-05")["weeklySalesAhead"] == 110.0
    assert at(features, 1, "2010-02-19")["weeklySalesAhead"] == 133.1
    assert math.isnan(at(features, 1, "2010-02-26")["weeklySalesAhead"])  # last week: no label
    assert at(features, 2, "2010-02-05")["weeklySalesAhead"] == 180.0
    # store 2 has no 2/19 row: no label for 2/12 and no lag for 2/26 (never store 1's values)
    assert math.isnan(at(features, 2, "2010-02-12")["weeklySalesAhead"])
    assert math.isnan(at(features, 2, "2010-02-26")["lag1Ratio"])
    assert at(features, 2, "2010-02-26")["lag2Ratio"] == pytest.approx(math.log(180.0 / 145.8))
    assert at(features, 1, "2010-02-12")["lag1Ratio"] == pytest.approx(math.log(100 / 110))
    assert at(features, 1, "2010-02-26")["lag3Ratio"] == pytest.approx(math.log(100 / 133.1))
    assert math.isnan(at(features, 1, "2010-02-05")["lag1Ratio"])
    assert at(features, 1, "2010-02-26")["mean4Ratio"] == pytest.approx(
        math.log(np.mean([100, 110, 121, 133.1]) / 133.1))


def test_year_ago_features():
    dates = pd.date_range("2010-02-05", periods=62, freq="7D")
    sales = 1000.0 + np.arange(62)
    frame = pd.DataFrame({"date": dates, "store": 7, "weeklySales": sales,
                          "isHoliday": [i == 9 for i in range(62)]})
    f = build_features(frame).set_index("date")
    t = dates[59]
    assert f.loc[t, "lastYearNextRatio"] == pytest.approx(math.log(sales[8] / sales[59]))
    assert f.loc[t, "lastYearStep"] == pytest.approx(math.log(sales[8] / sales[7]))
    assert f.loc[t, "yoyRatio"] == pytest.approx(math.log(sales[59] / sales[7]))
    assert f.loc[t, "yoy4Ratio"] == pytest.approx(math.log(sales[56:60].mean() / sales[4:8].mean()))
    assert f.loc[t, "hasHistory"] == 1.0 and f.loc[dates[58], "hasHistory"] == 0.0
    assert f.loc[dates[60], "lastYearNextHoliday"] == 1.0  # week 9 was last year's week after 60-52
    assert f.loc[t, "lastYearNextHoliday"] == 0.0


def test_iso_and_datetime_dates_and_boolean_flags():
    frame = pd.DataFrame({"date": ["2012-02-03", "2012-02-10"], "store": ["4", "4"],
                          "weeklySales": [1.0, 2.0], "isHoliday": [False, True]})
    f = build_features(frame)
    assert list(f["date"]) == [pd.Timestamp("2012-02-03"), pd.Timestamp("2012-02-10")]
    assert list(f["isHoliday"]) == [False, True] and f["store"].dtype == "int64"
    frame["date"] = pd.to_datetime(frame["date"])
    assert build_features(frame)["weeklySalesAhead"].iloc[0] == 2.0


@pytest.mark.parametrize("bad", [
    pd.DataFrame({"store": [1], "weeklySales": [1.0]}),                                   # no date
    pd.DataFrame({"date": ["2/5/10", "2/5/10"], "store": [1, 1], "weeklySales": [1.0, 2.0]}),  # duplicate
    pd.DataFrame({"date": ["someday"], "store": [1], "weeklySales": [1.0]}),              # bad date
    pd.DataFrame({"date": ["2/5/10"], "store": [1], "weeklySales": [1.0], "isHoliday": ["maybe"]}),
    pd.DataFrame({"date": ["2/5/10"], "store": [1], "sales": [1.0]}),                     # no target
    pd.DataFrame({"date": ["2/5/10"], "store": [1], "weeklySales": [1.0], "WEEKLYSALES": [1.0]}),
])
def test_bad_frames_raise_config_errors(bad):
    with pytest.raises(ConfigError):
        build_features(bad)


def test_input_feature_expansion():
    columns = build_features(csv_like()).columns
    assert expand_input_features(["storeType", "date", "isHoliday", "lag1Ratio"], columns) == \
        ["storeType_A", "storeType_B", "storeType_C", "weekSin", "weekCos", "holiday", "lag1Ratio"]
    with pytest.raises(ConfigError, match="lag9Ratio"):
        expand_input_features(["lag9Ratio"], columns)


def test_csv_and_parquet_files_read_alike(tmp_path):
    raw = csv_like()
    raw.to_csv(tmp_path / "r.csv", index=False)
    parquet = prepare(raw).rename(columns={"markDown": "markdown"})
    parquet.to_parquet(tmp_path / "r.parquet", index=False)
    engine = RetailSalesEngine()
    a = engine.feature_pipeline(ctx(), engine.load_data(ctx(), str(tmp_path / "r.csv")))
    b = engine.feature_pipeline(ctx(), engine.load_data(ctx(), f"file://{tmp_path / 'r.parquet'}"))
    pd.testing.assert_frame_equal(a[b.columns], b, check_dtype=False)
