"""`AbstractScorer` of the older Python class templates: `score(self, configProperties={}, ...)`."""
from __future__ import annotations

from typing import Any


class AbstractScorer:
    def score(self, configProperties: Any = {}, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement score(self, "
                                  "configProperties={}, ...)")
