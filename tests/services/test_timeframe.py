"""A run's timeframe: the data set reader keeps only the last N minutes of the timestamp column."""
from __future__ import annotations

import pandas as pd
import pytest

from runtime.datasets import read_dataset, resolve_dataset, scan_dataset
from runtime.errors import ConfigError
from runtime.timeframe import ENV_TIMEFRAME, Timeframe


@pytest.fixture
def hourly(tmp_path):
    path = tmp_path / "events.csv"
    pd.DataFrame({"timestamp": pd.date_range("2024-03-01", periods=10, freq="h").astype(str),
                  "value": range(10)}).to_csv(path, index=False)
    return resolve_dataset(str(path))


def _use(monkeypatch, timeframe: Timeframe) -> None:
    for key, value in timeframe.to_env().items():
        monkeypatch.setenv(key, value)


def test_read_keeps_the_last_minutes_up_to_the_latest_timestamp(hourly, monkeypatch):
    _use(monkeypatch, Timeframe(180, None, (hourly.uri,)))
    assert read_dataset(hourly)["value"].tolist() == [7, 8, 9]
    batches = list(scan_dataset(hourly, ["value"], batch_rows=4))
    assert pd.concat(batches)["value"].tolist() == [7, 8, 9]
    assert list(batches[0].columns) == ["value"]   # the timestamp read for the filter, not given


def test_other_data_sets_and_runs_without_a_timeframe_read_everything(hourly, monkeypatch, tmp_path):
    assert len(read_dataset(hourly)) == 10
    _use(monkeypatch, Timeframe(60, None, ((tmp_path / "other.csv").as_uri(),)))
    assert len(read_dataset(hourly)) == 10


def test_a_named_column_and_a_missing_one(tmp_path, monkeypatch):
    path = tmp_path / "sales.csv"
    pd.DataFrame({"week": ["2/5/10", "2/12/10", "2/19/10"], "sales": [1, 2, 3]}).to_csv(
        path, index=False)
    ref = resolve_dataset(str(path))
    _use(monkeypatch, Timeframe(8 * 24 * 60, "week", (ref.uri,)))
    assert read_dataset(ref)["sales"].tolist() == [2, 3]
    _use(monkeypatch, Timeframe(60, None, (ref.uri,)))
    with pytest.raises(ConfigError, match="timeframeColumn"):
        read_dataset(ref)


def test_a_malformed_environment_value_is_a_clear_error(hourly, monkeypatch):
    monkeypatch.setenv(ENV_TIMEFRAME, "{not json")
    with pytest.raises(ConfigError, match=ENV_TIMEFRAME):
        read_dataset(hourly)
