"""What the regression and classification evaluators share: the default split and the metrics.

The runtime (the recipe adapter) calls `split(config, dataframe)`, trains on the first part,
scores the second with the recipe's scoring pipeline and calls
`evaluate(validation, model, config, scored=scored)`; a recipe may override either method.
Config keys, all strings as the platform passed them:

  evaluation.trainRatio       share of rows trained on, 0 < r < 1 (default 0.8)
  evaluation.seed             seed of the random split (default: none, a new split each run)
  evaluation.metrics          comma-separated names (runtime.metrics; default per evaluator)
  evaluation.labelColumn      the column of actual values (required)
  evaluation.predictionColumn the scored column (default "prediction")
  evaluation.scalingColumn    MASE's naive forecast column (regression; default: none)
  evaluation.probabilityColumn / evaluation.scoreColumn   scores for AUC (classification)
  evaluation.positiveLabel    the positive class of a binary classifier
"""
from __future__ import annotations

from typing import Any, Optional

from runtime.errors import ConfigError
from runtime.metrics import compute_metrics


def _get(config: Any, key: str, default: Any = None) -> Any:
    value = (config or {}).get(key, default)
    return default if value is None or (isinstance(value, str) and value.strip() == "") else value


class _Evaluator:
    default_metrics = ""

    def split(self, config: Any = {}, dataframe: Any = None) -> tuple[Any, Any]:
        """(train, validation): rows drawn at random, `evaluation.trainRatio` of them for
        training, with `evaluation.seed`; each part keeps the frame's row order."""
        import numpy as np

        if dataframe is None:
            raise ConfigError("split(config, dataframe) needs the loaded data frame")
        raw_ratio = _get(config, "evaluation.trainRatio", 0.8)
        try:
            ratio = float(raw_ratio)
        except (TypeError, ValueError):
            raise ConfigError(f"evaluation.trainRatio {raw_ratio!r} is not a number") from None
        if not 0.0 < ratio < 1.0:
            raise ConfigError(f"evaluation.trainRatio must be between 0 and 1 (exclusive), got "
                              f"{raw_ratio!r}")
        raw_seed = _get(config, "evaluation.seed")
        try:
            seed = None if raw_seed is None else int(float(raw_seed))
        except (TypeError, ValueError):
            raise ConfigError(f"evaluation.seed {raw_seed!r} is not a whole number") from None
        rows = len(dataframe)
        if rows < 2:
            raise ConfigError(f"Cannot split {rows} row(s) into training and validation rows")
        order = np.random.RandomState(None if seed is None else seed % 2**32).permutation(rows)
        cut = min(rows - 1, max(1, int(round(rows * ratio))))
        train = dataframe.iloc[np.sort(order[:cut])]
        validation = dataframe.iloc[np.sort(order[cut:])]
        return train, validation

    def evaluate(self, data: Any = None, model: Any = None, configProperties: Any = None,
                 scored: Any = None, **kwargs: Any) -> list[dict[str, Any]]:
        """`[{name, value, valueType}]` of `evaluation.metrics`, comparing the label column of
        `data` (the validation rows) with the prediction column of `scored` (what the scoring
        pipeline returned for them; None: `data` holds the predictions too). When `scored` lacks
        the label column its rows are matched to `data`'s by position."""
        config = configProperties if configProperties is not None else kwargs.get("config", {})
        frame = data if scored is None else scored
        if frame is None:
            raise ConfigError("evaluate needs the validation rows (data) or their scores (scored)")
        label = _get(config, "evaluation.labelColumn")
        if label is None:
            raise ConfigError("evaluation.labelColumn is not set: name the column holding the "
                              "actual values")
        prediction = _get(config, "evaluation.predictionColumn", "prediction")
        y_pred = _column(frame, prediction, "evaluation.predictionColumn", "scored rows")
        y_true = self._aligned(frame, data, label, "evaluation.labelColumn")
        names = _get(config, "evaluation.metrics", self.default_metrics)
        return self.compute(names, y_true, y_pred, config, frame, data)

    def _aligned(self, frame: Any, data: Any, column: str, key: str) -> Any:
        if column in frame.columns:
            return frame[column]
        if data is not None and frame is not data and column in data.columns:
            if len(data) != len(frame):
                raise ConfigError(
                    f"The scored frame has {len(frame)} rows for {len(data)} validation rows and "
                    f"no {column!r} column: keep {key} {column!r} in score's output, or return "
                    "one row per validation row")
            return data[column].to_numpy()
        return _column(frame, column, key, "scored rows")

    def compute(self, names: Any, y_true: Any, y_pred: Any, config: Any, frame: Any,
                data: Any) -> list[dict[str, Any]]:
        return compute_metrics(names, y_true, y_pred)


def _column(frame: Any, column: str, key: str, where: str) -> Any:
    if column not in frame.columns:
        raise ConfigError(f"{key} {column!r} is not a column of the {where} (columns: "
                          f"{', '.join(map(str, frame.columns))})")
    return frame[column]


def optional(config: Any, key: str) -> Optional[str]:
    return _get(config, key)
