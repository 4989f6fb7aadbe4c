"""The role `scoring.dataSaver` / `feature.dataSaver`."""
from __future__ import annotations

from typing import Any


class DataSaver:
    """Saves a Spark DataFrame: typically `df.write.format("com.adobe.platform.query")` with the
    data set id from `config_properties` (e.g. `scoringResultsDataSetId`)."""

    def save(self, config_properties: dict, dataframe: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} must implement "
                                  "save(self, config_properties, dataframe)")
