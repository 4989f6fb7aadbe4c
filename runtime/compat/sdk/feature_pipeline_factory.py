"""`FeaturePipelineFactory`: a Pipeline of feature stages (`create_pipeline`, `get_param_map`)."""
from __future__ import annotations

from typing import Any, Optional


class FeaturePipelineFactory:
    def create_pipeline(self, config_properties: dict) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement "
                                  "create_pipeline(self, config_properties) -> pyspark.ml.Pipeline")

    def get_param_map(self, config_properties: dict, sparkSession: Any) -> Optional[dict]:
        return None
