"""The platform data source `com.adobe.platform.query` over local data sets: QSOption through py4j,
reads and writes by catalog id or path, the XDM (struct-nested) shape, batches, clear errors."""
from __future__ import annotations

import pandas as pd
import pytest

from runtime.spark.datasource import FORMAT, clear_catalog, ensure_jar, jar_name, publish_catalog


@pytest.fixture
def qs(spark):
    return spark.sparkContext._jvm.com.adobe.platform.query.QSOption


@pytest.fixture
def catalog(spark, tmp_path):
    """Publishes a catalog for one test and clears it afterwards."""
    published = []

    def publish(entries, sandbox="sb-test"):
        published.extend(publish_catalog(spark, entries, sandbox=sandbox))
    yield publish
    clear_catalog(spark, published)


def _read(spark, qs, dataset_id):
    return (spark.read.format(FORMAT).option(qs.userToken(), "local-user-token")
            .option(qs.mode(), "batch").option(qs.datasetId(), dataset_id).load())


def test_qsoption_names_reach_python_through_py4j(qs):
    names = {qs.userToken(), qs.serviceToken(), qs.imsOrg(), qs.apiKey(), qs.mode(), qs.datasetId(),
             qs.sandboxName()}
    assert len(names) == 7 and all(isinstance(n, str) and n for n in names)


def test_the_jar_is_compiled_once_and_named_by_its_sources(jars_dir):
    jar = ensure_jar(jars_dir)
    assert jar.name == jar_name() and ensure_jar(jars_dir) == jar
    assert list(jars_dir.glob("*.jar")) == [jar]


def test_reads_a_catalog_id_with_spark_s_own_parquet_scan(spark, qs, catalog, tmp_path):
    path = tmp_path / "sales.parquet"
    pd.DataFrame({"store": [1, 2, 3], "weeklySales": [10.5, 20.0, 30.25]}).to_parquet(path)
    catalog({"sales": {"uri": path.as_uri(), "format": "parquet"}})
    frame = _read(spark, qs, "sales")
    assert sorted(frame.toPandas()["weeklySales"]) == [10.5, 20.0, 30.25]
    plan = frame._jdf.queryExecution().executedPlan().toString()
    assert "FileScan parquet" in plan      # the native reader, not rows through Python
    assert _read(spark, qs, str(path)).count() == 3          # a plain path needs no catalog entry


def test_xdm_round_trip_parquet_keeps_structs_csv_and_jsonl_flatten(spark, qs, catalog, tmp_path):
    from pyspark.sql import functions as F

    from runtime.datasets import read_dataset, resolve_dataset

    catalog({"out-parquet": {"uri": (tmp_path / "out.parquet").as_uri(), "format": "parquet"},
             "out-csv": {"uri": (tmp_path / "out.csv").as_uri(), "format": "csv"},
             "out-jsonl": {"uri": (tmp_path / "out.jsonl").as_uri(), "format": "jsonl"}})
    rows = spark.createDataFrame([(1, "2012-02-03", 1.5), (2, "2012-02-10", 2.5)],
                                 "store int, date string, prediction double")
    xdm = rows.select(F.col("store").cast("string").alias("_id"),
                      F.struct("date", "store", "prediction").alias("_tenant"))
    for dataset_id in ("out-parquet", "out-csv", "out-jsonl"):
        xdm.write.format(FORMAT).option(qs.datasetId(), dataset_id).save()

    nested = _read(spark, qs, "out-parquet")
    assert nested.schema["_tenant"].dataType.simpleString() == \
        "struct<date:string,store:int,prediction:double>"
    assert sorted(r["prediction"] for r in nested.select("_tenant.*").collect()) == [1.5, 2.5]
    flat = _read(spark, qs, "out-csv")
    assert set(flat.columns) == {"_id", "_tenant.date", "_tenant.store", "_tenant.prediction"}
    assert (tmp_path / "out.csv").is_file()                 # one file, as pandas writes one
    assert sorted(r["prediction"] for r in _read(spark, qs, "out-jsonl").select("_tenant.*").collect()) \
        == [1.5, 2.5]
    # The runtime's own (pandas) reader sees the same data set, XDM fields as dotted columns.
    with_pandas = read_dataset(resolve_dataset("out-parquet", catalog={
        "out-parquet": {"uri": (tmp_path / "out.parquet").as_uri(), "format": "parquet"}}))
    assert sorted(with_pandas["_tenant.prediction"]) == [1.5, 2.5]


def test_a_save_adds_a_batch_and_overwrite_replaces(spark, qs, catalog, tmp_path):
    single = tmp_path / "scores.parquet"
    pd.DataFrame({"x": [1, 2]}).to_parquet(single)       # a one-file data set written by pandas
    catalog({"scores": {"uri": single.as_uri(), "format": "parquet"},
             "log": {"uri": (tmp_path / "log.csv").as_uri(), "format": "csv"}})
    more = spark.createDataFrame([(3,), (4,), (5,)], "x long")
    more.write.format(FORMAT).option(qs.datasetId(), "scores").save()
    assert sorted(r["x"] for r in _read(spark, qs, "scores").collect()) == [1, 2, 3, 4, 5]
    more.write.format(FORMAT).option(qs.datasetId(), "scores").mode("overwrite").save()
    assert sorted(r["x"] for r in _read(spark, qs, "scores").collect()) == [3, 4, 5]
    more.write.format(FORMAT).option(qs.datasetId(), "log").save()
    more.write.format(FORMAT).option(qs.datasetId(), "log").save()
    assert len(pd.read_csv(tmp_path / "log.csv")) == 6     # one header, both batches


def test_unknown_ids_and_missing_options_are_clear_errors(spark, qs, catalog, tmp_path):
    catalog({"known": {"uri": (tmp_path / "k.parquet").as_uri(), "format": "parquet"}},
            sandbox="sb-errors")
    with pytest.raises(Exception) as unknown:
        _read(spark, qs, "nope")
    text = str(unknown.value)
    assert "Unknown data set id 'nope'" in text and "sb-errors" in text and "known" in text
    with pytest.raises(Exception) as empty:
        _read(spark, qs, "known")
    assert "has no data yet" in str(empty.value)
    with pytest.raises(Exception) as no_id:
        spark.read.format(FORMAT).load()
    assert qs.datasetId() in str(no_id.value)
    clear_catalog(spark)
    with pytest.raises(Exception) as cleared:
        _read(spark, qs, "known")
    assert "Unknown data set id 'known'" in str(cleared.value)
