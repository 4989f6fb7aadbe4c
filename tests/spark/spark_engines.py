"""Pyspark engines for the tests, loaded by the Spark worker as `spark_engines:<Class>`."""
from __future__ import annotations

import json
from pathlib import Path

from runtime.engine import Engine


class _Base(Engine):
    kind = "pyspark"
    params = {}

    def load_data(self, ctx, uri):
        return ctx.spark.range(3)

    def save_model(self, ctx, model, directory):
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "model.json").write_text(json.dumps(model))

    def load_model(self, ctx, directory):
        return None

    def score(self, ctx, model, data):
        return data


class SparkJobFails(_Base):
    """A Spark job that fails inside the JVM with Spark's own message."""

    name = "spark-job-fails"

    def train(self, ctx, features):
        ctx.spark.sql("SELECT assert_true(id < 0, 'weeklySales must be negative here') FROM range(5)").collect()


class LongSparkJob(_Base):
    """A Spark job that runs until cancelled."""

    name = "long-spark-job"

    def train(self, ctx, features):
        ctx.spark.range(0, 10**13, numPartitions=2).selectExpr("sum(id % 7)").collect()
        return {}


class CountsRows(_Base):
    name = "counts-rows"

    def train(self, ctx, features):
        return {"rows": ctx.spark.range(100).count(), "parallelism": ctx.spark.sparkContext.defaultParallelism}
