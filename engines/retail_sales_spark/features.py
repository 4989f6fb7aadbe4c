"""The Spark feature pipeline of `retail-sales-spark`: per-store window lag/lead features.

Names and meanings follow `engines.retail_sales.features` (log ratios of positive sales, so one
model serves stores of every size); here they come from Spark windows over each store's weeks.
pyspark is imported inside the functions: importing this module stays cheap.
"""
from __future__ import annotations

from typing import Any

from runtime.errors import ConfigError

SCHEMA = ("date", "store", "storeType", "weeklySales", "storeSize", "temperature",
          "regionalFuelPrice", "markdown", "cpi", "unemployment", "isHoliday")
LABEL_SUFFIX = "Ahead"
RATIO_LABEL = "logRatioAhead"   # what the GBT learns: log(next week / this week)
STORE_TYPE_INDEX = "storeTypeIndex"
DEFAULT_INPUT_FEATURES = ("lastYearNextRatio", "lastYearStep", "yoy4Ratio", "yoy8Ratio", "yoyRatio",
                          "lag1Ratio", "lag2Ratio", "lag3Ratio", "mean4Ratio", "mean8Ratio",
                          "holiday", "lastYearNextHoliday", "hasHistory", "weekOfYear",
                          STORE_TYPE_INDEX, "logStoreSize")


def label_column(target: str) -> str:
    return target + LABEL_SUFFIX


def normalise(data: Any) -> Any:
    """Schema spelling (case-insensitive), `date` as a date, `store` as long, `isHoliday` as boolean."""
    from pyspark.sql import functions as F
    from pyspark.sql.types import BooleanType, DateType, StringType, TimestampType

    canonical = {name.lower(): name for name in SCHEMA}
    for column in data.columns:
        target = canonical.get(column.lower())
        if target is not None and column != target:
            if target in data.columns:
                raise ConfigError(f"Columns {column!r} and {target!r} differ only in case")
            data = data.withColumnRenamed(column, target)
    missing = [c for c in ("date", "store") if c not in data.columns]
    if missing:
        raise ConfigError(f"Retail data lacks column(s) {', '.join(missing)}; "
                          f"expected the schema {', '.join(SCHEMA)}")
    kind = data.schema["date"].dataType
    if isinstance(kind, (DateType, TimestampType)):
        date = F.to_date("date")
    else:  # the CSVs' M/D/YY, or ISO dates
        text = F.trim(F.col("date").cast(StringType()))
        date = F.to_date(F.coalesce(F.try_to_timestamp(text, F.lit("M/d/yy")),
                                    F.try_to_timestamp(text, F.lit("yyyy-MM-dd")),
                                    F.try_to_timestamp(text)))
    data = data.withColumn("date", date).withColumn("store", F.col("store").cast("long"))
    if "isHoliday" in data.columns and not isinstance(data.schema["isHoliday"].dataType, BooleanType):
        flag = F.lower(F.trim(F.col("isHoliday").cast(StringType())))
        data = data.withColumn("isHoliday", flag.isin("true", "1", "1.0", "yes", "t", "y"))
    return data


def build_features(data: Any, target: str = "weeklySales") -> Any:
    """`data` (normalised) plus the features, the label `<target>Ahead` (lead 1 in the store's
    window) and RATIO_LABEL. Rows are one per (store, week); lags count rows, i.e. weeks."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    if target not in data.columns:
        raise ConfigError(f"Retail data lacks the target column {target!r}")
    y = F.col(target).cast("double")
    data = data.withColumn(target, y)
    by_week = Window.partitionBy("store").orderBy("date")

    def lag(k: int, column: str = target) -> Any:
        return F.lag(column, k).over(by_week)

    def mean(first: int, width: int) -> Any:  # mean of y[t-first-width+1 .. t-first]
        return F.avg(target).over(by_week.rowsBetween(-(first + width - 1), -first))

    def log_ratio(a: Any, b: Any) -> Any:
        return F.when((a > 0) & (b > 0), F.log(a / b))

    yt = F.col(target)
    holiday = F.col("isHoliday").cast("double") if "isHoliday" in data.columns else F.lit(0.0)
    columns = {
        label_column(target): F.lead(target, 1).over(by_week),
        "lag1Ratio": log_ratio(lag(1), yt),
        "lag2Ratio": log_ratio(lag(2), yt),
        "lag3Ratio": log_ratio(lag(3), yt),
        "mean4Ratio": log_ratio(mean(0, 4), yt),
        "mean8Ratio": log_ratio(mean(0, 8), yt),
        "lastYearNextRatio": log_ratio(lag(51), yt),
        "lastYearStep": log_ratio(lag(51), lag(52)),
        "yoyRatio": log_ratio(yt, lag(52)),
        "yoy4Ratio": log_ratio(mean(0, 4), mean(52, 4)),
        "yoy8Ratio": log_ratio(mean(0, 8), mean(52, 8)),
        "lastYearNextHoliday": F.coalesce(lag(51, "_holiday"), F.lit(0.0)),
        "holiday": F.col("_holiday"),
        "weekOfYear": F.weekofyear("date").cast("double"),
    }
    frame = data.withColumn("_holiday", holiday)
    frame = frame.select("*", *[expr.alias(name) for name, expr in columns.items()])
    frame = frame.withColumn("hasHistory", F.when(F.col("lastYearNextRatio").isNotNull()
                                                  & F.col("yoy8Ratio").isNotNull(), 1.0)
                             .otherwise(0.0))
    # Mean windows near a store's first weeks are shorter than their name: no year-ago history.
    frame = frame.withColumn("yoy8Ratio", F.when(F.count(target).over(
        by_week.rowsBetween(-59, 0)) >= 60, F.col("yoy8Ratio")))
    frame = frame.withColumn("yoy4Ratio", F.when(F.count(target).over(
        by_week.rowsBetween(-55, 0)) >= 56, F.col("yoy4Ratio")))
    if "storeSize" in frame.columns:
        frame = frame.withColumn("logStoreSize", log_ratio(F.col("storeSize").cast("double"), F.lit(1.0)))
    if "storeType" not in frame.columns:
        frame = frame.withColumn("storeType", F.lit("?"))
    frame = frame.withColumn(RATIO_LABEL, log_ratio(F.col(label_column(target)), yt))
    return frame.drop("_holiday")
