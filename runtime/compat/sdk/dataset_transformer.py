"""The role `feature.dataset.transformer` of a feature pipeline."""
from __future__ import annotations

from typing import Any


class DatasetTransformer:
    """Turns the loaded data set into the transformed one the feature pipeline saves."""

    def transform(self, config_properties: dict, dataset: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement "
                                  "transform(self, config_properties, dataset) -> DataFrame")
