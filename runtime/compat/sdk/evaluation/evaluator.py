"""`MLEvaluator`: the role `evaluator` — split the training data, evaluate the fitted model.

Settings read from config_properties: `evaluation.metrics` (comma-separated), `evaluation.labelColumn`,
`evaluation.predictionColumn` (default `prediction`), `evaluation.scalingColumn` (MASE's naive
forecast, optional), `evaluation.trainRatio` (default 0.8) and `evaluation.seed` for the default split.
Metrics are computed by runtime.metrics, the same code as Python recipes use.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence

DEFAULT_TRAIN_RATIO = 0.8


def setting(config_properties: dict, key: str, default: Any = None) -> Any:
    value = (config_properties or {}).get(key)
    return default if value is None or (isinstance(value, str) and value.strip() == "") else value


class MLEvaluator:
    """Base of the evaluators; subclasses say which metrics they compute by default."""

    default_metrics: Sequence[str] = ()

    def split(self, config_properties: dict = None, dataframe: Any = None) -> tuple[Any, Any]:
        """(train, test) at random: `evaluation.trainRatio` of the rows for training."""
        config_properties = config_properties or {}
        ratio = float(setting(config_properties, "evaluation.trainRatio", DEFAULT_TRAIN_RATIO))
        if not 0.0 < ratio < 1.0:
            from runtime.errors import ConfigError

            raise ConfigError(f"evaluation.trainRatio must lie between 0 and 1, got {ratio}")
        seed = setting(config_properties, "evaluation.seed")
        weights = [ratio, 1.0 - ratio]
        train, test = (dataframe.randomSplit(weights, int(seed)) if seed is not None
                       else dataframe.randomSplit(weights))
        return train, test

    def evaluate(self, dataframe: Any, model: Any, config_properties: dict) -> list[dict]:
        """The metrics of `model` on `dataframe` (the test split): `[{name, value, valueType}]`."""
        return self.metrics(config_properties, model.transform(dataframe))

    # --- helpers a recipe's own evaluate may call --------------------------------------------

    def metric_names(self, config_properties: dict) -> Any:
        names = setting(config_properties, "evaluation.metrics") or list(self.default_metrics)
        return names

    def label_column(self, config_properties: dict) -> str:
        label = setting(config_properties, "evaluation.labelColumn")
        if label is None:
            from runtime.errors import ConfigError

            raise ConfigError(f"{type(self).__name__} needs evaluation.labelColumn: the column "
                              "holding the actual values")
        return str(label)

    def metrics(self, config_properties: dict, predictions: Any) -> list[dict]:
        from runtime.metrics import compute_metrics

        frame = self.collect(config_properties, predictions)
        return compute_metrics(self.metric_names(config_properties), frame["label"], frame["prediction"],
                               **self.extra_arguments(config_properties, frame))

    def extra_arguments(self, config_properties: dict, frame: Any) -> dict:
        return {}

    def extra_columns(self, config_properties: dict, predictions: Any) -> dict[str, str]:
        """Columns beside label and prediction to collect (alias -> column name)."""
        return {}

    def collect(self, config_properties: dict, predictions: Any) -> Any:
        """label, prediction (and extra columns) of the scored rows, as a pandas DataFrame; rows
        without a label or a prediction are left out."""
        from pyspark.sql import functions as F

        from runtime.errors import ConfigError

        wanted = {"label": self.label_column(config_properties),
                  "prediction": str(setting(config_properties, "evaluation.predictionColumn", "prediction")),
                  **self.extra_columns(config_properties, predictions)}
        columns = []
        for alias, name in wanted.items():
            try:
                predictions.select(F.col(name))   # resolves nested `_tenant.field` names too
            except Exception as exc:
                raise ConfigError(
                    f"{type(self).__name__}: the scored data has no column {name!r} ({alias}); "
                    f"columns: {', '.join(predictions.columns)}") from exc
            columns.append(F.col(name).alias(alias))
        rows = predictions.select(*columns).where(F.col("label").isNotNull() & F.col("prediction").isNotNull())
        return rows.toPandas()


def scaling_column(config_properties: dict) -> Optional[str]:
    value = setting(config_properties, "evaluation.scalingColumn")
    return None if value is None else str(value)
