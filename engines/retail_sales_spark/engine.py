"""`retail-sales-spark`: next week's weeklySales per store, the platform's PySpark approach.

Per-store window lag/lead features, StringIndexer for storeType, VectorAssembler and Spark ML's
GBTRegressor, trained on log(next week / this week); the model is a PipelineModel saved with Spark
ML's own writer, plus the stores' recent history (Parquet) and a small JSON of metadata.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from runtime.engine import FEATURE_PIPELINE, SCORE, TRAIN, Engine, Metric, TaskContext
from runtime.errors import ConfigError

from .features import (RATIO_LABEL, SCHEMA, STORE_TYPE_INDEX, build_features, label_column,
                       normalise)
from .params import FeaturePipelineParams, ScoreParams, TrainParams

FORMAT_VERSION = 1
PIPELINE_DIR = "pipeline"        # Spark ML's PipelineModel writer
HISTORY_DIR = "history"          # the stores' last HISTORY_WEEKS weeks, Parquet
META_FILE = "model.json"
# Year-ago features reach back 59 weeks; two years also covers scoring files that start well
# before the training data ends (as the python engine does).
HISTORY_WEEKS = 104
LOG_RATIO_PREDICTION = "logRatioPrediction"


@dataclass
class SparkRetailModel:
    pipeline: Any                # pyspark.ml.PipelineModel
    history: Any                 # Spark DataFrame: store, date, target, isHoliday
    meta: dict[str, Any]


class RetailSalesSparkEngine(Engine):
    name = "retail-sales-spark"
    kind = "pyspark"
    description = ("Next week's weeklySales per store (Adobe's retail-sales sample task) in Spark: "
                   "window lag/lead features, StringIndexer, VectorAssembler, GBTRegressor.")
    params = {TRAIN: TrainParams, SCORE: ScoreParams, FEATURE_PIPELINE: FeaturePipelineParams}
    score_input = "raw"  # score/evaluate rebuild features with the model's stored history

    # --- stages ---------------------------------------------------------------------------

    def load_data(self, ctx: TaskContext, uri: str) -> Any:
        spark = _spark(ctx)
        path = _local_path(uri)
        suffix = path.suffix.lower()
        if suffix == ".csv":
            frame = spark.read.option("header", True).option("inferSchema", True).csv(str(path))
        elif suffix in (".parquet", ".pq") or path.is_dir():
            frame = spark.read.parquet(str(path))
        else:
            raise ConfigError(f"Cannot read {path}: expected a .parquet or .csv file")
        return normalise(frame)

    def feature_pipeline(self, ctx: TaskContext, data: Any) -> Any:
        return build_features(data, _target(ctx))

    def train(self, ctx: TaskContext, features: Any) -> SparkRetailModel:
        from pyspark.ml import Pipeline
        from pyspark.ml.feature import StringIndexer, VectorAssembler
        from pyspark.ml.regression import GBTRegressor
        from pyspark.sql import Window
        from pyspark.sql import functions as F

        params = ctx.params
        if not isinstance(params, TrainParams):
            raise ConfigError(f"retail-sales-spark train needs its train parameters, got {type(params).__name__}")
        target, label = params.target, label_column(params.target)
        frame = features if label in features.columns else build_features(features, target)
        inputs = params.input_feature_names()
        unknown = [c for c in inputs if c not in frame.columns and c != STORE_TYPE_INDEX]
        if unknown:
            raise ConfigError(f"ACP_DSW_INPUT_FEATURES names unknown column(s) {', '.join(unknown)}")

        rows = frame.where(F.col(RATIO_LABEL).isNotNull() & (F.col(target) > 0))
        rows = _between(rows, params.train_start, params.train_end)
        rows = _filled(rows, inputs).cache()
        stats = rows.agg(F.count(F.lit(1)).alias("n"),
                         F.avg(F.abs(F.col(label) - F.col(target))).alias("naive_mae")).first()
        if not stats["n"]:
            raise ConfigError(f"No training rows between {params.train_start} and {params.train_end} "
                              f"with a {target} and a next-week label")
        ctx.logger.info("training GBTRegressor on %d rows, %d inputs: maxDepth=%d maxIter=%d stepSize=%g",
                        stats["n"], len(inputs), params.max_depth, params.n_estimators,
                        params.learning_rate)
        pipeline = Pipeline(stages=[
            StringIndexer(inputCol="storeType", outputCol=STORE_TYPE_INDEX, handleInvalid="keep"),
            VectorAssembler(inputCols=inputs, outputCol="features", handleInvalid="keep"),
            GBTRegressor(featuresCol="features", labelCol=RATIO_LABEL,
                         predictionCol=LOG_RATIO_PREDICTION, maxDepth=params.max_depth,
                         maxIter=params.n_estimators, stepSize=params.learning_rate,
                         maxBins=params.max_bins, subsamplingRate=params.subsampling_rate,
                         seed=params.seed),
        ])
        fitted = pipeline.fit(rows)
        _log_iterations(ctx, fitted, rows)
        rows.unpersist()

        keep = [c for c in ("store", "date", target, "isHoliday", "storeType", "storeSize")
                if c in frame.columns]
        history = (frame.where(F.col(target).isNotNull()).select(*keep)
                   .withColumn("_latest", F.max("date").over(Window.partitionBy("store")))
                   .where(F.col("date") > F.date_sub(F.col("_latest"), 7 * HISTORY_WEEKS))
                   .drop("_latest"))
        meta = {"format_version": FORMAT_VERSION, "engine": self.name, "target": target,
                "label": label, "inputs": inputs, "naive_scale": float(stats["naive_mae"] or 0.0),
                "training_rows": int(stats["n"]),
                "gbt": {"maxDepth": params.max_depth, "maxIter": params.n_estimators,
                        "stepSize": params.learning_rate, "maxBins": params.max_bins,
                        "subsamplingRate": params.subsampling_rate, "seed": params.seed}}
        return SparkRetailModel(pipeline=fitted, history=history, meta=meta)

    def save_model(self, ctx: TaskContext, model: SparkRetailModel, directory: Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        model.pipeline.write().overwrite().save(str(directory / PIPELINE_DIR))
        model.history.write.mode("overwrite").parquet(str(directory / HISTORY_DIR))
        (directory / META_FILE).write_text(json.dumps(model.meta, indent=2, sort_keys=True))

    def load_model(self, ctx: TaskContext, directory: Path) -> SparkRetailModel:
        from pyspark.ml import PipelineModel

        directory = Path(directory)
        meta_path = directory / META_FILE
        if not meta_path.exists():
            raise ConfigError(f"{directory} is not a retail-sales-spark model: {META_FILE} is missing")
        meta = json.loads(meta_path.read_text())
        if meta.get("format_version") != FORMAT_VERSION:
            raise ConfigError(f"Model format {meta.get('format_version')} is not supported "
                              f"(expected {FORMAT_VERSION})")
        spark = _spark(ctx)
        return SparkRetailModel(pipeline=PipelineModel.load(str(directory / PIPELINE_DIR)),
                                history=spark.read.parquet(str(directory / HISTORY_DIR)), meta=meta)

    def score(self, ctx: TaskContext, model: SparkRetailModel, data: Any) -> Any:
        """`date, store, prediction`: the forecast of the week after `date` for that store."""
        return self._predict(model, data).select("date", "store", "prediction")

    def evaluate(self, ctx: TaskContext, model: SparkRetailModel, data: Any) -> list[Metric]:
        """The four metrics on the validation rows (a label, dated from `validation_start`),
        computed with the same definitions as `retail-sales`."""
        from pyspark.sql import functions as F

        from engines.retail_sales.metrics import METRIC_NAMES, forecast_metrics

        label = getattr(ctx.params, "label_column", None) or model.meta["label"]
        frame = self._predict(model, data)
        if label not in frame.columns:
            raise ConfigError(f"evaluation.labelColumn {label!r} is not a column of the data")
        rows = frame.where(F.col(label).isNotNull() & F.col("prediction").isNotNull())
        start = getattr(ctx.params, "validation_start", None)
        if start is not None:
            rows = rows.where(F.col("date") >= F.lit(start))
        pairs = rows.select(F.col(label).alias("actual"), "prediction").toPandas()
        if pairs.empty:   # the model is good without them: kept, with the reason as a warning
            from engines.retail_sales.engine import no_validation_message

            last = frame.where(F.col(label).isNotNull()).agg(F.max("date")).first()[0]
            ctx.logger.warning("%s", no_validation_message(
                start, last.date().isoformat() if hasattr(last, "date") else last))
            return []
        names = ctx.params.metric_names() if isinstance(ctx.params, TrainParams) else list(METRIC_NAMES)
        ctx.logger.info("evaluating on %d validation rows", len(pairs))
        return forecast_metrics(pairs["actual"].to_numpy(), pairs["prediction"].to_numpy(),
                                model.meta["naive_scale"], names)

    # --- helpers ---------------------------------------------------------------------------

    def _predict(self, model: SparkRetailModel, data: Any) -> Any:
        """`data`'s rows with features computed over the model's history in front of them (a
        scoring file without last year still gets year-ago features), and `prediction`."""
        from pyspark.sql import functions as F

        target = model.meta["target"]
        keep = [c for c in data.columns if c in SCHEMA or c == target]
        scored = data.select(*keep).withColumn("_scored", F.lit(True))
        past = (model.history.join(scored.select("store", "date"), ["store", "date"], "left_anti")
                .withColumn("_scored", F.lit(False)))
        combined = scored.unionByName(past, allowMissingColumns=True)
        frame = build_features(combined, target).where(F.col("_scored")).drop("_scored")
        frame = _filled(frame, model.meta["inputs"])
        out = model.pipeline.transform(frame)
        return out.withColumn("prediction", F.when(F.col(target) > 0, F.col(target) * F.exp(
            F.col(LOG_RATIO_PREDICTION)))).drop("features")


def _spark(ctx: TaskContext) -> Any:
    if ctx.spark is None:
        raise ConfigError("retail-sales-spark needs a SparkSession (ctx.spark): run it on the "
                          "pyspark backend")
    return ctx.spark


def _log_iterations(ctx: TaskContext, fitted: Any, rows: Any) -> None:
    """The training loss after each boosting iteration, as a per-step curve: GBT's
    evaluateEachIteration, one Spark pass over the (cached) training rows."""
    from pyspark.ml import PipelineModel

    gbt = fitted.stages[-1]
    prepared = PipelineModel(fitted.stages[:-1]).transform(rows)
    for iteration, loss in enumerate(gbt.evaluateEachIteration(prepared, gbt.getLossType()), 1):
        ctx.log_metric("trainingLoss", float(loss), iteration)


def _target(ctx: TaskContext) -> str:
    return getattr(ctx.params, "target", None) or "weeklySales"


def _local_path(uri: str) -> Path:
    text = str(uri)
    if text.startswith("file://"):
        from urllib.parse import unquote, urlparse
        return Path(unquote(urlparse(text).path))
    if "://" in text:
        raise ConfigError(f"Unsupported data URI {uri!r}: only local paths and file:// URIs are read")
    path = Path(text)
    if not path.exists():
        raise ConfigError(f"Data file not found: {path}")
    return path


def _between(frame: Any, start: date | None, end: date | None) -> Any:
    from pyspark.sql import functions as F

    if start is not None:
        frame = frame.where(F.col("date") >= F.lit(start))
    if end is not None:
        frame = frame.where(F.col("date") <= F.lit(end))
    return frame


def _filled(frame: Any, inputs: list[str]) -> Any:
    """Missing ratios (no history yet) as 0; `hasHistory` tells the trees which rows those are."""
    numeric = [c for c in inputs if c in frame.columns and c != STORE_TYPE_INDEX]
    return frame.fillna(0.0, subset=numeric)
