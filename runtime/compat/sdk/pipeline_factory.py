"""The role `pipeline.class`: builds the Spark ML Pipeline the runtime fits and scores with."""
from __future__ import annotations

from typing import Any, Optional


class PipelineFactory:
    """`apply` returns an unfitted `pyspark.ml.Pipeline`; `getParamMap` optional params for its fit
    (a ParamMap dict, or None). `train` and `score` are what the runtime calls; their defaults fit
    `apply`'s pipeline and transform with the fitted model, and a recipe may override them."""

    def apply(self, config_properties: dict) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement "
                                  "apply(self, config_properties) -> pyspark.ml.Pipeline")

    def getParamMap(self, config_properties: dict, sparkSession: Any) -> Optional[dict]:
        return None

    def train(self, config_properties: dict, dataframe: Any) -> Any:
        pipeline = self.apply(config_properties)
        params = self.getParamMap(config_properties, dataframe.sparkSession)
        return pipeline.fit(dataframe, params) if params else pipeline.fit(dataframe)

    def score(self, config_properties: dict, dataframe: Any, model: Any) -> Any:
        return model.transform(dataframe)
