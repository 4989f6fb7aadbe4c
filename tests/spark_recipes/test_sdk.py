"""Our `sdk` base classes on a real session: the evaluators' default split and metrics (the same
numbers runtime.metrics gives), and the pipeline factory's default train/score."""
from __future__ import annotations

import sys

import numpy as np
import pytest

from runtime.metrics import compute_metrics
from runtime.recipes import compat_path


@pytest.fixture
def sdk_path():
    """`sdk` importable for this test only (as in a recipe worker), then forgotten again."""
    path = str(compat_path())
    sys.path.insert(0, path)
    yield
    sys.path.remove(path)
    for name in [m for m in sys.modules if m == "sdk" or m.startswith("sdk.")]:
        del sys.modules[name]


def test_sdk_is_not_importable_by_the_runtime_itself():
    with pytest.raises(ImportError):
        __import__("sdk.data_loader")


def test_regression_evaluator_split_and_metrics(spark, sdk_path):
    from pyspark.ml import Pipeline
    from pyspark.ml.feature import VectorAssembler
    from pyspark.ml.regression import LinearRegression

    from sdk.evaluation.regression import RegressionEvaluator
    from sdk.pipeline_factory import PipelineFactory

    rng = np.random.default_rng(1)
    x = rng.normal(size=400)
    rows = [(float(a), float(3 * a + 10 + rng.normal(scale=0.5)), float(3 * a + 9)) for a in x]
    frame = spark.createDataFrame(rows, "x double, y double, naive double")
    config = {"evaluation.metrics": "MAE,RMSE,MASE,R-squared", "evaluation.labelColumn": "y",
              "evaluation.scalingColumn": "naive", "evaluation.trainRatio": "0.75",
              "evaluation.seed": "4"}
    evaluator = RegressionEvaluator()
    train, test = evaluator.split(config, frame)
    assert 0.6 < train.count() / 400 < 0.9 and train.count() + test.count() == 400

    class Factory(PipelineFactory):
        def apply(self, config_properties):
            return Pipeline(stages=[VectorAssembler(inputCols=["x"], outputCol="features"),
                                    LinearRegression(labelCol="y")])

    model = Factory().train(config, train)
    metrics = {m["name"]: m["value"] for m in evaluator.evaluate(test, model, config)}
    scored = Factory().score(config, test, model).toPandas()
    expected = {m["name"]: m["value"] for m in compute_metrics(
        "MAE,RMSE,MASE,R-squared", scored["y"], scored["prediction"], scaling=scored["naive"])}
    assert metrics == pytest.approx(expected)
    assert metrics["R-squared"] > 0.9 and metrics["MASE"] < 1   # better than the naive forecast


def test_classification_evaluator_uses_spark_ml_probabilities(spark, sdk_path):
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import VectorAssembler

    from sdk.evaluation.classification import ClassificationEvaluator

    rng = np.random.default_rng(2)
    rows = [(float(a), float(a + rng.normal(scale=0.7) > 0)) for a in rng.normal(size=300)]
    frame = spark.createDataFrame(rows, "x double, label double")
    model = Pipeline(stages=[VectorAssembler(inputCols=["x"], outputCol="features"),
                             LogisticRegression()]).fit(frame)
    metrics = {m["name"]: m["value"] for m in ClassificationEvaluator().evaluate(
        frame, model, {"evaluation.labelColumn": "label"})}
    assert set(metrics) == {"accuracy", "precision", "recall", "F-score", "AUC"}
    assert metrics["accuracy"] > 0.7 and metrics["AUC"] > metrics["accuracy"] - 0.2
    with pytest.raises(Exception) as missing:
        ClassificationEvaluator().evaluate(frame, model, {"evaluation.labelColumn": "nope"})
    assert "no column 'nope'" in str(missing.value)
