"""Typed parameters of `retail-sales-spark`: the sample recipe's keys, mapped onto Spark ML's GBT.

`max_depth` is GBTRegressor.maxDepth, `n_estimators` its maxIter (trees), `learning_rate` its
stepSize. The ACP_DSW_*, evaluation.* and data-set keys mean what they mean for `retail-sales`.
"""
from __future__ import annotations

from pydantic import Field

from engines.retail_sales.params import FeaturePipelineParams, ForecastTrainParams, ScoreDataParams

from .features import DEFAULT_INPUT_FEATURES

__all__ = ["FeaturePipelineParams", "TrainParams", "ScoreParams"]


class TrainParams(ForecastTrainParams):
    max_depth: int = Field(5, ge=1, le=30, description="GBTRegressor.maxDepth")
    n_estimators: int = Field(40, ge=1, le=1000, description="GBTRegressor.maxIter (trees)")
    learning_rate: float = Field(0.1, gt=0, le=1.0, description="GBTRegressor.stepSize")
    max_bins: int = Field(32, ge=2, le=1024, description="GBTRegressor.maxBins")
    subsampling_rate: float = Field(1.0, gt=0, le=1.0, description="GBTRegressor.subsamplingRate")
    input_features: str = Field(",".join(DEFAULT_INPUT_FEATURES), alias="ACP_DSW_INPUT_FEATURES",
                                description="Comma-separated feature columns given to the model")


class ScoreParams(ScoreDataParams):
    """Scoring runs in Spark: no batch size to set."""
