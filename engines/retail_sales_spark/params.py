"""Typed parameters of `retail-sales-spark`: the sample recipe's keys, mapped onto Spark ML's GBT.

`max_depth` is GBTRegressor.maxDepth, `n_estimators` its maxIter (trees), `learning_rate` its
stepSize. The ACP_DSW_*, evaluation.* and data-set keys mean what they mean for `retail-sales`.
"""
from __future__ import annotations

from datetime import date
from typing import Optional

from pydantic import Field, field_validator

from engines.retail_sales.metrics import METRIC_NAMES
from engines.retail_sales.params import RetailCommonParams

from .features import DEFAULT_INPUT_FEATURES


class FeaturePipelineParams(RetailCommonParams):
    trainingDataSetId: Optional[str] = None
    featuresDataSetId: Optional[str] = Field(None, description="Where the features are written (Parquet)")


class TrainParams(RetailCommonParams):
    max_depth: int = Field(5, ge=1, le=30, description="GBTRegressor.maxDepth")
    n_estimators: int = Field(40, ge=1, le=1000, description="GBTRegressor.maxIter (trees)")
    learning_rate: float = Field(0.1, gt=0, le=1.0, description="GBTRegressor.stepSize")
    max_bins: int = Field(32, ge=2, le=1024, description="GBTRegressor.maxBins")
    subsampling_rate: float = Field(1.0, gt=0, le=1.0, description="GBTRegressor.subsamplingRate")
    input_features: str = Field(",".join(DEFAULT_INPUT_FEATURES), alias="ACP_DSW_INPUT_FEATURES",
                                description="Comma-separated feature columns given to the model")
    label_column: Optional[str] = Field(None, alias="evaluation.labelColumn",
                                        description="Ground truth column; default <target>Ahead")
    metrics: str = Field(",".join(METRIC_NAMES), alias="evaluation.metrics")
    training_schema: Optional[str] = Field(None, alias="ACP_DSW_TRAINING_XDM_SCHEMA")
    seed: int = 0
    trainingDataSetId: Optional[str] = None
    # The sample's evaluation split (the same as retail-sales): train on rows dated
    # train_start..train_end, evaluate on rows from validation_start.
    train_start: Optional[date] = date(2010, 2, 12)
    train_end: Optional[date] = date(2012, 1, 27)
    validation_start: Optional[date] = date(2012, 2, 3)

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, value: str) -> str:
        names = [m.strip().upper() for m in value.split(",") if m.strip()]
        unknown = [m for m in names if m not in METRIC_NAMES]
        if unknown:
            raise ValueError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRIC_NAMES)}")
        return ",".join(names)

    def input_feature_names(self) -> list[str]:
        return [name.strip() for name in self.input_features.split(",") if name.strip()]

    def metric_names(self) -> list[str]:
        return [m for m in self.metrics.split(",") if m]


class ScoreParams(RetailCommonParams):
    scoringDataSetId: Optional[str] = None
    scoringResultsDataSetId: Optional[str] = None
    scoring_results_schema: Optional[str] = Field(None, alias="ACP_DSW_SCORING_RESULTS_XDM_SCHEMA")
