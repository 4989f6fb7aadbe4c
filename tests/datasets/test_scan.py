"""runtime.datasets.scan_dataset: a data set in batches, read as read_dataset reads it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.dataset as ds
import pytest

from runtime.datasets import (ReadAgain, count_rows, dataset_columns, parquet_fields, read_dataset,
                              resolve_dataset, scan_dataset, write_dataset)
from runtime.errors import ConfigError

RETAIL = Path(__file__).resolve().parents[3] / "shared" / "data" / "retail"


def _scanned(path, columns=None, **options) -> pd.DataFrame:
    types = None
    while True:   # as a reader that must return pd.read_csv's types does
        try:
            parts = list(scan_dataset(resolve_dataset(str(path)), columns, exact_types=True,
                                      csv_types=types, **options))
            break
        except ReadAgain as again:
            types = again.column_types
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


@pytest.mark.parametrize("name", ["retail.csv", "retail-scoring.csv", "DSWRetailSales.parquet"])
def test_batches_of_the_real_retail_data_equal_the_whole_read(name):
    ref = resolve_dataset(str(RETAIL / name))
    whole = read_dataset(ref)
    parts = list(scan_dataset(ref, batch_rows=500))
    assert len(parts) >= 2
    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), whole, check_exact=True)
    assert count_rows(ref) == len(whole) and dataset_columns(ref) == list(whole.columns)
    pd.testing.assert_frame_equal(_scanned(RETAIL / name, ["store", "date"], batch_rows=700),
                                  whole[["store", "date"]], check_exact=True)


def test_csv_columns_whose_type_changes_after_the_first_block_read_as_pandas_reads_them(tmp_path):
    # pyarrow types CSV columns from the first block; pandas from the whole file. Late values
    # (a decimal in an integer column, text in a number column, a value in an empty column,
    # a flag that turns into text) must come out as pd.read_csv gives them.
    n = 20_000
    frame = pd.DataFrame({"count": np.arange(n).astype(object), "amount": np.arange(n) * 1.0,
                          "later": [""] * n, "flag": ["TRUE"] * n,
                          "day": ["2010-02-05"] * n, "name": ["x"] * n}).astype(object)
    frame.iloc[n - 1, :4] = ["2.5", "n/a?", "7", "maybe"]
    frame.iloc[n - 3, 5] = ""
    frame.to_csv(tmp_path / "late.csv", index=False)
    expected = pd.read_csv(tmp_path / "late.csv")
    got = _scanned(tmp_path / "late.csv", batch_rows=1000)
    pd.testing.assert_frame_equal(got, expected, check_exact=True)
    assert got["day"].iloc[0] == "2010-02-05"   # ISO dates stay text, as pandas leaves them
    # without exact_types the batches before the change keep their type, the rest are wider
    parts = list(scan_dataset(resolve_dataset(str(tmp_path / "late.csv")), batch_rows=1000))
    assert parts[0]["amount"].dtype == "float64" and parts[-1]["amount"].iloc[-1] == "n/a?"
    assert sum(map(len, parts)) == n


def test_a_missing_column_is_named_before_anything_is_read(tmp_path):
    for name in ("retail.csv", "DSWRetailSales.parquet"):
        with pytest.raises(ConfigError, match=r"has no column\(s\) nope \(columns: date, store"):
            next(scan_dataset(resolve_dataset(str(RETAIL / name)), ["store", "nope"]))


def test_a_parquet_filter_narrows_the_scan_and_an_empty_result_keeps_the_types(tmp_path):
    frame = pd.DataFrame({"store": np.arange(100), "sales": np.linspace(0, 1, 100),
                          "kind": ["A", "B"] * 50})
    write_dataset(frame, resolve_dataset(str(tmp_path / "d.parquet")))
    fields = parquet_fields(resolve_dataset(str(tmp_path / "d.parquet")))
    assert fields is not None and set(fields) == {"store", "sales", "kind"}
    got = _scanned(tmp_path / "d.parquet", ["store", "kind"], arrow_filter=ds.field("store") >= 90)
    pd.testing.assert_frame_equal(got, frame.loc[90:, ["store", "kind"]].reset_index(drop=True))
    none = _scanned(tmp_path / "d.parquet", arrow_filter=ds.field("store") > 1000)
    assert none.empty and dict(none.dtypes) == dict(frame.dtypes)
    assert parquet_fields(resolve_dataset(str(RETAIL / "retail.csv"))) is None


def test_xdm_groups_are_flattened_per_batch_and_projected_by_dotted_name(tmp_path):
    frame = pd.DataFrame({"_acme.store": [1, 2, 3], "_acme.date": ["a", "b", "c"], "x": [1.0, 2, 3]})
    for name in ("x.parquet", "x.jsonl"):
        write_dataset(frame, resolve_dataset(str(tmp_path / name)))
        pd.testing.assert_frame_equal(_scanned(tmp_path / name, batch_rows=2), frame)
        pd.testing.assert_frame_equal(_scanned(tmp_path / name, ["_acme.date"], batch_rows=2),
                                      frame[["_acme.date"]])
    assert count_rows(resolve_dataset(str(tmp_path / "x.jsonl"))) == 3


def test_a_folder_is_scanned_file_by_file_in_name_order(tmp_path):
    folder = tmp_path / "batches"
    folder.mkdir()
    pd.DataFrame({"a": [1, 2]}).to_csv(folder / "part-1.csv", index=False)
    pd.DataFrame({"a": [3], "b": ["x"]}).to_csv(folder / "part-2.csv", index=False)
    ref = resolve_dataset(str(folder))
    pd.testing.assert_frame_equal(_scanned(folder), read_dataset(ref))
    assert count_rows(ref) == 3 and dataset_columns(ref) == ["a", "b"]
