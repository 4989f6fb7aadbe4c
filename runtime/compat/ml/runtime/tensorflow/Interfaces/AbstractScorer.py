"""`AbstractScorer` of class-based recipes: `score(self, config={})` loads the model from
`config["modelPATH"]`, scores its data and writes the results itself."""
from __future__ import annotations

from typing import Any


class AbstractScorer:
    def score(self, config: Any = {}) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement score(self, config={{}})")
