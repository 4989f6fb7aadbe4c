"""runtime.datasets' reader and writer: formats, folders of batches, the XDM shape."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from runtime import datasets
from runtime.datasets import entry_for, read_dataset, resolve_dataset, write_dataset
from runtime.errors import ConfigError

RETAIL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "retail"


def frame() -> pd.DataFrame:
    return pd.DataFrame({"store": [1, 2, 3], "weeklySales": [10.5, 20.25, None],
                         "storeType": ["A", "B", "C"]})


def ref(path: Path, fmt: str | None = None, catalog: dict | None = None):
    return resolve_dataset(str(path), catalog or {})


@pytest.mark.parametrize("name", ["x.parquet", "x.csv", "x.jsonl", "x.json"])
def test_each_format_round_trips(tmp_path, name):
    written = write_dataset(frame(), ref(tmp_path / name))
    assert written == tmp_path / name
    back = read_dataset(ref(written))
    pd.testing.assert_frame_equal(back, frame(), check_dtype=False)
    if name.endswith("json") or name.endswith("jsonl"):
        lines = written.read_text().splitlines()
        assert len(lines) == 3 and json.loads(lines[0]) == {"store": 1, "weeklySales": 10.5,
                                                            "storeType": "A"}
    if name.endswith("parquet"):
        assert pq.read_schema(written).names == ["store", "weeklySales", "storeType"]


def test_reads_the_shared_retail_files_by_id(tmp_path):
    catalog = {"csv": entry_for("csv", str(RETAIL / "retail.csv")),
               "pq": entry_for("pq", str(RETAIL / "DSWRetailSales.parquet"))}
    from_csv = read_dataset(resolve_dataset("csv", catalog))
    from_parquet = read_dataset(resolve_dataset("pq", catalog))
    assert len(from_csv) == len(from_parquet) == 6435
    assert "markdown" in from_parquet.columns and "markDown" in from_csv.columns


def test_requested_format_into_a_folder_adds_a_batch(tmp_path):
    out = tmp_path / "results"            # no suffix: a folder data set, created on write
    first = write_dataset(frame(), ref(out), "json")
    second = write_dataset(frame(), ref(out), "parquet")
    assert first.parent == second.parent == out
    assert first.suffix == ".jsonl" and second.suffix == ".parquet"
    assert first.name.startswith("part-") and second.name.startswith("part-")
    assert not list(out.glob(".*.tmp"))
    both = read_dataset(ref(out))
    assert len(both) == 6 and set(both["store"]) == {1, 2, 3}
    registered = {"res": entry_for("res", str(out), "jsonl")}
    only_json = read_dataset(resolve_dataset("res", registered))
    assert len(only_json) == 3


def test_a_file_keeps_its_own_format_and_says_so(tmp_path, caplog):
    target = tmp_path / "scores.parquet"
    log = logging.getLogger("test.datasets")
    with caplog.at_level(logging.WARNING, logger="test.datasets"):
        written = write_dataset(frame(), ref(target), "json", log=log)
    assert written == target and pq.read_schema(target).names[0] == "store"
    assert "writing parquet, not the jsonl asked for" in caplog.text
    # a registered id with an explicit format writes that format whatever the name says
    catalog = {"out": entry_for("out", str(tmp_path / "scores.dat"), "jsonl")}
    written = write_dataset(frame(), resolve_dataset("out", catalog), "parquet")
    assert json.loads(written.read_text().splitlines()[0])["store"] == 1


def test_write_replaces_a_file_whole_and_records_it(tmp_path):
    target = tmp_path / "s.csv"
    write_dataset(frame(), ref(target))
    write_dataset(frame().head(1), ref(target))
    assert len(pd.read_csv(target)) == 1
    assert datasets.written[-1] == {"id": str(target), "path": str(target), "format": "csv",
                                    "rows": 1}


def test_bad_targets_and_sources_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="expected a .parquet, .jsonl or .csv file name"):
        write_dataset(frame(), ref(tmp_path / "x.txt"))
    with pytest.raises(ConfigError, match="Unknown data set file_format 'xml'"):
        write_dataset(frame(), ref(tmp_path / "x.csv"), "xml")
    with pytest.raises(ConfigError, match="not found"):
        read_dataset(ref(tmp_path / "missing.parquet"))
    (tmp_path / "t.txt").write_text("a")
    with pytest.raises(ConfigError, match="Cannot read"):
        read_dataset(ref(tmp_path / "t.txt"))
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(ConfigError, match="Cannot read Parquet data set"):
        read_dataset(ref(tmp_path / "bad.parquet"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="holds no"):
        read_dataset(ref(tmp_path / "empty"))
    with pytest.raises(ConfigError, match="no column"):
        read_dataset(ref(write_dataset(frame(), ref(tmp_path / "c.csv"))), columns=["nope"])


def xdm_frame() -> pd.DataFrame:
    scored = pd.DataFrame({"store": [1, 2], "date": ["2012-04-06", "2012-04-13"],
                           "prediction": [1.5, 2.5]}).add_prefix("_tenant.")
    return scored.join(pd.DataFrame({"_id": ["", ""], "timestamp": ["2019-01-01T00:00:00"] * 2,
                                     "eventType": ["", ""]}, index=scored.index))


def test_xdm_json_lines_nest_the_tenant_and_read_back_dotted(tmp_path):
    written = write_dataset(xdm_frame(), ref(tmp_path / "xdm.jsonl"), "json")
    first = json.loads(written.read_text().splitlines()[0])
    assert first == {"_tenant": {"store": 1, "date": "2012-04-06", "prediction": 1.5},
                     "_id": "", "timestamp": "2019-01-01T00:00:00", "eventType": ""}
    back = read_dataset(ref(written))
    assert list(back.columns) == list(xdm_frame().columns)
    pd.testing.assert_frame_equal(back, xdm_frame(), check_dtype=False)


def test_xdm_parquet_is_a_struct_column_read_back_dotted(tmp_path):
    written = write_dataset(xdm_frame(), ref(tmp_path / "xdm.parquet"))
    schema = pq.read_schema(written)
    assert schema.names == ["_tenant", "_id", "timestamp", "eventType"]
    assert pa.types.is_struct(schema.field("_tenant").type)
    assert [schema.field("_tenant").type[i].name for i in range(3)] == ["store", "date",
                                                                         "prediction"]
    back = read_dataset(ref(written))
    pd.testing.assert_frame_equal(back, xdm_frame(), check_dtype=False)


def test_xdm_nests_deeper_groups_and_reads_platform_exports(tmp_path):
    deep = pd.DataFrame({"_t.a.b": [1, 2], "_t.c": ["x", "y"], "plain.dotted": [3, 4]})
    written = write_dataset(deep, ref(tmp_path / "deep.jsonl"))
    assert json.loads(written.read_text().splitlines()[0]) == {
        "_t": {"a": {"b": 1}, "c": "x"}, "plain.dotted": 3}
    pd.testing.assert_frame_equal(read_dataset(ref(written)), deep, check_dtype=False)
    parquet = write_dataset(deep, ref(tmp_path / "deep.parquet"))
    pd.testing.assert_frame_equal(read_dataset(ref(parquet)), deep, check_dtype=False)
    # CSV is flat: the dotted names stay as they are
    csv = write_dataset(deep, ref(tmp_path / "deep.csv"))
    assert csv.read_text().splitlines()[0] == "_t.a.b,_t.c,plain.dotted"
    with pytest.raises(ConfigError, match="XDM columns cannot be both"):
        write_dataset(pd.DataFrame({"_t": [1], "_t.a": [2]}), ref(tmp_path / "clash.parquet"))
    with pytest.raises(ConfigError, match="also the parent"):
        write_dataset(pd.DataFrame({"_t.a": [2], "_t": [1]}), ref(tmp_path / "clash.parquet"))


def test_json_array_files_and_bad_json_lines(tmp_path):
    (tmp_path / "array.json").write_text(json.dumps([{"a": 1, "_t": {"b": "x"}}, {"a": 2}]))
    back = read_dataset(ref(tmp_path / "array.json"))
    assert list(back.columns) == ["a", "_t.b"] and back["a"].tolist() == [1, 2]
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n[1, 2]\n')
    with pytest.raises(ConfigError, match="ValueError at line 2"):
        read_dataset(ref(tmp_path / "bad.jsonl"))
    (tmp_path / "broken.jsonl").write_text('{"a": 1\n')
    with pytest.raises(ConfigError, match="Cannot read JSON lines data set"):
        read_dataset(ref(tmp_path / "broken.jsonl"))

