"""The synthetic retail data: deterministic, the sample's schema and split, learnable."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engines.retail_sales import RetailSalesEngine, generate_retail, write_retail_dataset
from engines.retail_sales.metrics import forecast_metrics
from engines.retail_sales.synthetic import COLUMNS, holiday_flags
from runtime.engine import default_context
from runtime.errors import ConfigError

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "retail" / "retail.csv"


def test_same_seed_same_frame_other_seed_other_frame():
    pd.testing.assert_frame_equal(generate_retail(7), generate_retail(7))
    assert not generate_retail(7)["weeklySales"].equals(generate_retail(8)["weeklySales"])


def test_schema_and_shape_match_the_sample_data():
    frame = generate_retail(0)
    assert tuple(frame.columns) == COLUMNS and len(frame) == 45 * 143
    assert frame["date"].min() == pd.Timestamp("2010-02-05")
    assert frame["date"].max() == pd.Timestamp("2012-10-26")
    assert (frame["date"].dt.day_of_week == 4).all()  # Fridays
    assert frame.groupby("store").size().eq(143).all()
    types = frame.drop_duplicates("store")["storeType"].value_counts().to_dict()
    assert types == {"A": 22, "B": 17, "C": 6}
    assert (frame["weeklySales"] > 0).all() and frame["isHoliday"].dtype == bool
    assert frame.drop_duplicates("date")["isHoliday"].sum() == 10  # as in the sample data
    assert len(generate_retail(0, stores=3, weeks=5)) == 15
    with pytest.raises(ConfigError):
        generate_retail(0, stores=0)


def test_holiday_weeks_are_the_real_datas():
    dates = pd.date_range("2010-02-05", periods=143, freq="7D")
    flagged = {d.strftime("%Y-%m-%d") for d in dates[holiday_flags(dates)]}
    assert {"2010-02-12", "2010-09-10", "2010-11-26", "2010-12-31", "2011-02-11", "2011-09-09",
            "2011-11-25", "2011-12-30", "2012-02-10", "2012-09-07"} == flagged
    if REAL.exists():
        real = pd.read_csv(REAL)
        real_dates = pd.DatetimeIndex(pd.to_datetime(real["date"], format="%m/%d/%y"))
        np.testing.assert_array_equal(holiday_flags(real_dates), real["isHoliday"].to_numpy())


def test_seasonal_peaks_repeat_yearly():
    weekly = generate_retail(0).groupby("date")["weeklySales"].sum()
    peaks = weekly.nlargest(2).index
    assert all(d.month == 12 and 18 <= d.day <= 24 for d in peaks)  # the two Christmas rushes


def test_written_dataset_follows_the_sample_split_and_spelling(tmp_path):
    paths = write_retail_dataset(tmp_path, seed=3)
    assert set(paths) == {"all.csv", "training.csv", "scoring.csv",
                          "all.parquet", "training.parquet", "scoring.parquet"}
    assert paths["training.csv"].name == "retail-training.csv"
    csv = pd.read_csv(paths["all.csv"])
    assert list(csv.columns)[7] == "markDown" and csv["date"].iloc[0] == "2/5/10"
    assert set(csv["isHoliday"].unique()) == {True, False}  # TRUE/FALSE, read back by pandas
    assert "TRUE" in paths["all.csv"].read_text()
    parquet = pd.read_parquet(paths["all.parquet"])
    assert "markdown" in parquet.columns and parquet["isHoliday"].dtype == bool
    training = pd.to_datetime(pd.read_parquet(paths["training.parquet"])["date"], format="%m/%d/%y")
    scoring = pd.to_datetime(pd.read_csv(paths["scoring.csv"])["date"], format="%m/%d/%y")
    assert training.max() == pd.Timestamp("2012-04-13") and scoring.min() == pd.Timestamp("2012-04-06")
    assert scoring.max() == pd.Timestamp("2012-10-26")
    again = write_retail_dataset(tmp_path / "again", seed=3)
    assert again["all.csv"].read_bytes() == paths["all.csv"].read_bytes()
    with pytest.raises(ConfigError):
        write_retail_dataset(tmp_path, weeks=10, scoring_weeks=30)


def test_written_files_train_and_beat_naive(tmp_path):
    paths = write_retail_dataset(tmp_path, seed=1)
    engine = RetailSalesEngine()
    ctx = default_context(engine, "train", {"epochs": "20", "chunk_rows": "0"}, threads=2)
    features = engine.feature_pipeline(ctx, engine.load_data(ctx, str(paths["all.csv"])))
    model = engine.train(ctx, features)
    ours = {m.name: m.value for m in engine.evaluate(ctx, model, features)}
    rows = (features["date"] >= "2012-02-03") & features["weeklySalesAhead"].notna()
    naive = {m.name: m.value for m in forecast_metrics(
        features.loc[rows, "weeklySalesAhead"], features.loc[rows, "weeklySales"], model.meta["naive_scale"])}
    assert ours["MAPE"] < naive["MAPE"]
