"""The role `training.dataLoader` / `scoring.dataLoader` / `feature.dataLoader`."""
from __future__ import annotations

from typing import Any


class DataLoader:
    """Loads a Spark DataFrame: typically `spark.read.format("com.adobe.platform.query")` with the
    data set id from `config_properties` (e.g. `trainingDataSetId`)."""

    def load(self, config_properties: dict, spark: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement "
                                  "load(self, config_properties, spark) -> DataFrame")
