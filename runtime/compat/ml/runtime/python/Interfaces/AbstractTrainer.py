"""`AbstractTrainer` of the older Python class templates: `train(self, configProperties={}, ...)`."""
from __future__ import annotations

from typing import Any


class AbstractTrainer:
    def train(self, configProperties: Any = {}, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement train(self, "
                                  "configProperties={}, ...)")
