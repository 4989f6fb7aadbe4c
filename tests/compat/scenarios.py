"""Scenarios run INSIDE a recipe-like interpreter (runtime/compat on its path), never in the test
suite's own process: `python scenarios.py OUT.json DATA_DIR` runs each `scenario_*` function and
writes {name: "ok" | traceback}. Works with pandas 1.x / numpy 1.x and pandas 2+/numpy 2."""
from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path

import numpy as np
import pandas as pd

RETAIL = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "retail"
WORK = Path(sys.argv[2]) if len(sys.argv) > 2 else Path.cwd()


def raises(exc_type, fn, match=""):
    try:
        fn()
    except exc_type as exc:
        assert match in str(exc), f"{match!r} not in {exc!r}"
        return exc
    raise AssertionError(f"{fn} did not raise {exc_type.__name__}")


def sample():
    return pd.DataFrame({
        "store": [1, 2, 3, 4, 5, 6],
        "sales": [10.0, 20.0, None, 40.0, 50.0, 60.0],
        "kind": ["A", "B", "A", "C", "B", "A"],
        "when": pd.to_datetime(["2010-02-05", "2010-02-12", "2010-02-19", "2010-02-26",
                                "2010-03-05", "2010-03-12"]),
        "day": ["2/5/10", "2/12/10", "2/19/10", "2/26/10", "3/5/10", "3/12/10"],
        "flag": [True, False, True, False, True, False],
    })


def catalog():
    """A run's catalog, as the worker hands it to recipe code (MLRUNTIME_DATASETS_FILE)."""
    from runtime.datasets import ENV_DATASETS_FILE, entry_for, write_catalog_file

    sample().to_parquet(WORK / "sample.parquet", index=False)
    entries = {"sample": entry_for("sample", str(WORK / "sample.parquet")),
               "retail": entry_for("retail", str(RETAIL / "DSWRetailSales-Training.parquet")),
               "results": entry_for("results", str(WORK / "results")),
               "xdm-out": entry_for("xdm-out", str(WORK / "xdm.jsonl"))}
    os.environ[ENV_DATASETS_FILE] = str(write_catalog_file(entries, WORK / "datasets.json"))


def reader(dataset_id="sample"):
    from platform_sdk.client_context import ClientContext
    from platform_sdk.dataset_reader import DatasetReader

    ctx = ClientContext(api_key="key", org_id="Org@AdobeOrg", user_token="u", service_token="s",
                        sandbox_id="prod", sandbox_name="prod")
    return DatasetReader(ctx, dataset_id)


def scenario_imports_come_from_compat():
    import ml.runtime.python.core.regressionEvaluator as reg
    import platform_sdk

    assert "compat" in Path(platform_sdk.__file__).parts, platform_sdk.__file__
    assert "compat" in Path(reg.__file__).parts
    from ml.runtime.python.Interfaces.AbstractEvaluator import AbstractEvaluator  # noqa: F401
    from ml.runtime.python.Interfaces.AbstractScorer import AbstractScorer  # noqa: F401
    from ml.runtime.python.Interfaces.AbstractTrainer import AbstractTrainer  # noqa: F401
    from ml.runtime.tensorflow.Interfaces.AbstractScorer import AbstractScorer as TS  # noqa: F401
    from ml.runtime.tensorflow.Interfaces.AbstractTrainer import AbstractTrainer as TT  # noqa: F401
    from platform_sdk.dataset_writer import DatasetWriter  # noqa: F401
    from platform_sdk.models import Dataset  # noqa: F401


def scenario_read_by_catalog_id():
    frame = reader("retail").read()   # the catalog's "retail" is RETAIL's training file
    assert len(frame) == len(pd.read_parquet(RETAIL / "DSWRetailSales-Training.parquet")) == 5175
    assert "weeklySales" in frame.columns
    assert list(reader().read()["store"]) == [1, 2, 3, 4, 5, 6]


def scenario_unknown_id_names_it():
    from runtime.errors import ConfigError

    raises(ConfigError, lambda: reader("5c8a9b0e1d2f"), "Unknown data set '5c8a9b0e1d2f'")
    raises(ConfigError, lambda: reader("5c8a9b0e1d2f"), "registered: results, retail, sample")


def stores(frame):
    return list(frame["store"])


def scenario_where_each_operator():
    r = reader()
    assert stores(r.where(r["store"].gt(4)).read()) == [5, 6]
    assert stores(r.where(r["store"].ge(4)).read()) == [4, 5, 6]
    assert stores(r.where(r["store"].lt(2)).read()) == [1]
    assert stores(r.where(r["store"].le(2)).read()) == [1, 2]
    assert stores(r.where(r["store"].eq(3)).read()) == [3]
    assert stores(r.where(r["kind"].eq("A")).read()) == [1, 3, 6]
    assert stores(r.where(r["store"].gt("4")).read()) == [5, 6]          # numeric strings
    assert stores(r.where(r["sales"].gt(15)).read()) == [2, 4, 5, 6]     # missing never matches
    assert stores(r.where(r["when"].ge("2010-03-01")).read()) == [5, 6]  # datetime column
    assert stores(r.where(r["day"].lt("2010-02-19")).read()) == [1, 2]  # dates stored as text
    assert stores(r.where(r["flag"].eq("true")).read()) == [1, 3, 5]
    assert stores(r.where(r["store"].ne(1)).read()) == [2, 3, 4, 5, 6]


def scenario_where_and_or_select_limit_offset():
    r = reader()
    both = r.where(r["store"].gt(1).And(r["store"].lt(5), r["kind"].eq("A"))).read()
    assert stores(both) == [3]
    either = r.where(r["store"].eq(1).Or(r["kind"].eq("C"))).read()
    assert stores(either) == [1, 4]
    nested = r.where(r["store"].gt(4).Or(r["store"].lt(2)).And(r["kind"].eq("A"))).read()
    assert stores(nested) == [1, 6]
    chained = r.where(r["store"].gt(1)).where(r["store"].lt(4)).read()   # two wheres: AND
    assert stores(chained) == [2, 3]
    selected = r.select(["kind", "store"]).read()
    assert list(selected.columns) == ["kind", "store"] and len(selected) == 6
    assert stores(r.limit(2).read()) == [1, 2]
    assert stores(r.offset(4).read()) == [5, 6]
    assert stores(r.offset(1).limit(2).read()) == [2, 3]
    page = r.where(r["kind"].eq("A")).offset(1).limit(1).select(["store"]).read()
    assert page.to_dict("list") == {"store": [3]} and list(page.index) == [0]
    assert stores(r.sort([("store", "desc")]).limit(2).read()) == [6, 5]
    assert len(r.read()) == 6   # every builder call returned a new reader
    assert stores(r.limit(0).read()) == []


def scenario_where_errors():
    from runtime.errors import ConfigError

    r = reader()
    raises(ConfigError, lambda: r.where(r["nope"].gt(1)).read(), "no column 'nope'")
    raises(ConfigError, lambda: r.select(["nope"]).read(), "no column(s) nope")
    raises(ConfigError, lambda: r.where(r["store"].gt("abc")).read(), "cannot compare")
    raises(ValueError, lambda: r.limit(-1), ">= 0")
    raises(ValueError, lambda: r.offset(1.5), "whole number")
    raises(TypeError, lambda: r.where("store > 1"), "condition")
    raises(TypeError, lambda: r["a"].gt(1) and r["b"].gt(1), "And")


def scenario_writer_formats_where_the_id_points():
    from platform_sdk.client_context import ClientContext
    from platform_sdk.dataset_writer import DatasetWriter
    from platform_sdk.models import Dataset

    ctx = ClientContext(api_key="k", org_id="o", sandbox_name="prod")
    scored = pd.DataFrame({"store": [1, 2], "prediction": [1.5, 2.5]})
    dataset = Dataset(ctx).get_by_id("results")
    assert dataset.id == "results" and dataset.path == WORK / "results"
    as_json = Path(DatasetWriter(ctx, dataset).write(scored, file_format="json"))
    as_parquet = Path(DatasetWriter(ctx, dataset).write(scored, file_format="parquet"))
    assert as_json.parent == as_parquet.parent == WORK / "results"
    assert as_json.suffix == ".jsonl" and as_parquet.suffix == ".parquet"
    assert json.loads(as_json.read_text().splitlines()[1]) == {"store": 2, "prediction": 2.5}
    assert pd.read_parquet(as_parquet).equals(scored)
    assert len(reader("results").read()) == 4
    path_target = WORK / "direct.parquet"
    written = DatasetWriter(ctx, Dataset(ctx).get_by_id(str(path_target))).write(
        scored, file_format="parquet")
    assert Path(written) == path_target and pd.read_parquet(path_target).equals(scored)


def scenario_xdm_round_trip_as_the_sample_recipes_do():
    from platform_sdk.dataset_writer import DatasetWriter
    from platform_sdk.models import Dataset

    tenant = "_acmecorp"
    prediction = pd.DataFrame({"store": [1, 2], "date": ["2012-04-06", "2012-04-13"],
                               "prediction": [1.5, 2.5]}).add_prefix(tenant + ".")
    prediction = prediction.join(pd.DataFrame(
        {"_id": "", "timestamp": "2019-01-01T00:00:00", "eventType": ""}, index=prediction.index))
    DatasetWriter(None, Dataset(None).get_by_id("xdm-out")).write(prediction, file_format="json")
    first = json.loads((WORK / "xdm.jsonl").read_text().splitlines()[0])
    assert first[tenant] == {"store": 1, "date": "2012-04-06", "prediction": 1.5}
    r = reader("xdm-out")
    frame = r.where(r[tenant + ".date"].gt("2012-04-07")).read()
    assert list(frame[tenant + ".store"]) == [2]
    if "_id" in frame.columns:   # what the sample loaders do with an XDM frame
        frame = frame.rename(columns=lambda x: str(x)[str(x).find(".") + 1:])
        frame = frame.drop(["_id", "eventType", "timestamp"], axis=1)
    assert list(frame.columns) == ["store", "date", "prediction"]


def scenario_regression_evaluator_split_and_metrics():
    from ml.runtime.python.core.regressionEvaluator import RegressionEvaluator
    from runtime.errors import ConfigError

    class Evaluator(RegressionEvaluator):
        def __init__(self):   # the samples never call the base __init__
            pass

    frame = pd.DataFrame({"y": np.arange(1.0, 101.0), "naive": np.arange(1.0, 101.0) + 2})
    config = {"evaluation.trainRatio": "0.8", "evaluation.seed": "7"}
    train, validation = Evaluator().split(config, frame)
    again = Evaluator().split(config, frame)[1]
    assert len(train) == 80 and len(validation) == 20 and validation.index.equals(again.index)
    assert set(train.index).isdisjoint(validation.index) and train.index.is_monotonic_increasing
    other = Evaluator().split({**config, "evaluation.seed": "8"}, frame)[1]
    assert not validation.index.equals(other.index)

    data = pd.DataFrame({"y": [1.0, 2.0, 4.0], "naive": [2.0, 2.0, 2.0]})
    scored = pd.DataFrame({"prediction": [2.0, 2.0, 3.0]})   # no label: matched by position
    metrics = Evaluator().evaluate(data, None, {
        "evaluation.labelColumn": "y", "evaluation.metrics": "MAPE,MAE,RMSE,MASE,MSE,R-squared",
        "evaluation.scalingColumn": "naive"}, scored=scored)
    values = {m["name"]: m["value"] for m in metrics}
    assert [m["name"] for m in metrics] == ["MAPE", "MAE", "RMSE", "MASE", "MSE", "R-squared"]
    assert abs(values["MAPE"] - 1.25 / 3) < 1e-12 and abs(values["MAE"] - 2 / 3) < 1e-12
    assert abs(values["MASE"] - (2 / 3) / 1.0) < 1e-12   # MAE of the naive column: (1+0+2)/3
    assert all(m["valueType"] == "double" for m in metrics)
    raises(ConfigError, lambda: Evaluator().evaluate(data, None, {"evaluation.metrics": "MAE"},
                                                     scored=scored), "evaluation.labelColumn")
    raises(ConfigError, lambda: Evaluator().evaluate(data, None, {
        "evaluation.labelColumn": "y", "evaluation.metrics": "MAE,BLEU"}, scored=scored),
        "Unknown metric 'BLEU'")
    raises(ConfigError, lambda: Evaluator().evaluate(data, None, {
        "evaluation.labelColumn": "y"}, scored=scored.head(2)), "2 rows for 3 validation rows")
    raises(ConfigError, lambda: Evaluator().split({"evaluation.trainRatio": "1.5"}, frame),
           "between 0 and 1")


def scenario_classification_evaluator():
    from ml.runtime.python.core.classificationEvaluator import ClassificationEvaluator

    data = pd.DataFrame({"label": [0, 0, 1, 1], "prediction": [0, 1, 0, 1],
                         "probability": [0.1, 0.4, 0.35, 0.8]})
    metrics = ClassificationEvaluator().evaluate(data, None, {
        "evaluation.labelColumn": "label", "evaluation.probabilityColumn": "probability",
        "evaluation.metrics": "accuracy,precision,recall,F-score,AUC"})
    values = {m["name"]: m["value"] for m in metrics}
    assert values == {"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "F-score": 0.5,
                      "AUC": 0.75}, values


def scenario_abstract_bases_say_what_to_implement():
    from ml.runtime.python.Interfaces.AbstractEvaluator import AbstractEvaluator
    from ml.runtime.tensorflow.Interfaces.AbstractTrainer import AbstractTrainer

    class Old(AbstractEvaluator):
        def evaluate(self, data=[], model={}, configProperties={}):
            return [{"name": "MAE", "value": 1.0, "valueType": "double"}]

    assert Old().evaluate()[0]["name"] == "MAE"
    raises(NotImplementedError, lambda: Old().split({}), "split(self, configProperties={})")

    class Trainer(AbstractTrainer):
        pass

    raises(NotImplementedError, lambda: Trainer().train({}), "Trainer must implement train")


def _whole_frame_path(r):
    """What DatasetReader.read() did before it streamed: the whole data set read, then the query
    applied in pandas (filter, sort, offset/limit, select)."""
    from runtime.datasets import read_dataset

    frame = read_dataset(r.ref)
    if r._where is not None:
        frame = frame[r._where.mask(frame).to_numpy()]
    if r._sort:
        frame = frame.sort_values([c for c, _ in r._sort], ascending=[a for _, a in r._sort],
                                  kind="mergesort")
    if r._offset or r._limit is not None:
        end = None if r._limit is None else r._offset + r._limit
        frame = frame.iloc[r._offset:end]
    if r._select is not None:
        frame = frame[r._select]
    return frame.reset_index(drop=True)


def _pushdown_sources():
    """One frame of 120 rows (numbers with gaps, text with gaps, a datetime, dates as text, a
    flag, an XDM tenant group) as CSV, JSON lines (nested), Parquet with the group as a struct
    and Parquet with flat dotted names; Parquet in row groups of 16 rows so filters skip some."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from runtime.datasets import resolve_dataset, write_dataset
    from runtime.dataset_formats import nested_table

    n = 120
    rng = np.random.default_rng(7)
    days = pd.date_range("2010-02-05", periods=n, freq="7D")
    frame = pd.DataFrame({
        "store": np.arange(1, n + 1),
        "sales": np.where(rng.random(n) < 0.1, np.nan, np.round(rng.normal(30, 10, n), 2)),
        "kind": [None if i % 17 == 0 else "ABC"[i % 3] for i in range(n)],
        "when": days,
        "day": [f"{d.month}/{d.day}/{d.year % 100}" for d in days],
        "flag": [i % 4 == 0 for i in range(n)],
        "_acme.store": np.arange(1000, 1000 + n),
        "_acme.date": days.strftime("%Y-%m-%d"),
    })
    folder = WORK / "pushdown"
    folder.mkdir(exist_ok=True)
    frame.to_csv(folder / "data.csv", index=False)
    write_dataset(frame, resolve_dataset(str(folder / "data.jsonl")))
    pq.write_table(nested_table(frame), str(folder / "nested.parquet"), row_group_size=16)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), str(folder / "flat.parquet"),
                   row_group_size=16)
    return [folder / name for name in ("data.csv", "data.jsonl", "nested.parquet", "flat.parquet")]


def scenario_streamed_reads_equal_the_whole_frame_path():
    for path in _pushdown_sources():
        r = reader(str(path))
        conditions = [
            None, r["store"].gt(50), r["store"].gt("50"), r["sales"].le(30.5), r["sales"].ne(20),
            r["kind"].eq("A"), r["kind"].ge("B"), r["when"].ge("2010-09-01"),
            r["day"].lt("2010-08-19"), r["flag"].eq("true"),
            r["_acme.store"].gt(1100).And(r["kind"].eq("B")),
            r["store"].lt(5).Or(r["_acme.date"].gt("2012-01-01")),
            r["sales"].gt(25).And(r["store"].le(90).Or(r["kind"].eq("C"))),
            r["store"].gt(10_000),
        ]
        selects = [None, ["store"], ["kind", "store"], ["_acme.store", "sales"]]
        pages = [(0, None), (3, None), (0, 5), (7, 4), (0, 0), (500, None)]
        for i, condition in enumerate(conditions):
            for j, (offset, limit) in enumerate(pages):
                q = r if condition is None else r.where(condition)
                q = q.offset(offset)
                if limit is not None:
                    q = q.limit(limit)
                if selects[(i + j) % len(selects)] is not None:
                    q = q.select(selects[(i + j) % len(selects)])
                if (i + j) % 5 == 0:
                    q = q.sort([("sales", "desc"), ("store", "asc")])
                expected = _whole_frame_path(q)
                label = f"{path.name}: {q!r}"
                pd.testing.assert_frame_equal(q.read(), expected, check_exact=True, obj=label)
                batches = list(q.iter_batches(batch_size=7))
                assert all(len(b) == 7 for b in batches[:-1]) and \
                    all(list(b.index) == list(range(len(b))) for b in batches), label
                if expected.empty:
                    assert batches == [], label
                else:
                    pd.testing.assert_frame_equal(pd.concat(batches, ignore_index=True), expected,
                                                  check_exact=True, obj=label)


def scenario_streamed_csv_read_types_columns_as_pandas_does():
    # a number column with text in its last row (past pyarrow's first block): read() re-reads
    # it as text, as pd.read_csv typed the whole file
    n = 30_000
    frame = pd.DataFrame({"store": np.arange(n), "amount": (np.arange(n) * 0.5).astype(object),
                          "day": ["2/5/10"] * (n - 1) + ["2010-02-12"]})
    frame.iloc[n - 1, 1] = "unknown"
    frame.to_csv(WORK / "late.csv", index=False)
    r = reader(str(WORK / "late.csv"))
    for q in (r.where(r["store"].ge(10)).limit(25_000), r.select(["amount", "day"]),
              r.where(r["day"].ge("2010-02-06"))):   # mixed date formats: compared as text
        pd.testing.assert_frame_equal(q.read(), _whole_frame_path(q), check_exact=True)


def scenario_streamed_reads_keep_the_error_messages():
    from runtime.errors import ConfigError

    for path in _pushdown_sources():
        r = reader(str(path))
        raises(ConfigError, lambda: r.where(r["nope"].gt(1)).select(["store"]).read(),
               "no column 'nope'")
        raises(ConfigError, lambda: r.select(["store", "nope"]).limit(3).read(),
               "select: the data set has no column(s) nope")
        raises(ConfigError, lambda: r.where(r["store"].gt("abc")).read(), "cannot compare")
        raises(ValueError, lambda: list(r.iter_batches(batch_size=0)), "batch_size")


def scenario_metrics_module_without_pandas_2_api():
    from runtime.metrics import compute_metrics

    values = {m["name"]: m["value"] for m in compute_metrics(
        "AUC", np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))}
    assert values == {"AUC": 0.75}


def main() -> int:
    out = Path(sys.argv[1])
    WORK.mkdir(parents=True, exist_ok=True)
    catalog()
    results = {"versions": {"numpy": np.__version__, "pandas": pd.__version__}}
    for name, fn in sorted(globals().items()):
        if name.startswith("scenario_"):
            try:
                fn()
                results[name] = "ok"
            except BaseException:
                results[name] = traceback.format_exc()
    out.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    # leave as the runtime's worker does (runtime.worker.teardown): results written and flushed,
    # no interpreter teardown, where pyarrow's threads can abort a finished process (apache/arrow
    # #34314; seen once on a loaded CI machine as SIGABRT after every scenario had run)
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
