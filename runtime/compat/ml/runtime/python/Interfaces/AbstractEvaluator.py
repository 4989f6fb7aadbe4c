"""`AbstractEvaluator` of the older Python templates: the recipe loads and splits its own data in
`split(self, configProperties={})` and computes its metrics in
`evaluate(self, data=[], model={}, configProperties={})`, returning `[{name, value, valueType}]`."""
from __future__ import annotations

from typing import Any


class AbstractEvaluator:
    def split(self, configProperties: Any = {}) -> tuple[Any, Any]:
        raise NotImplementedError(f"{type(self).__name__} must implement "
                                  "split(self, configProperties={}) returning (train, test)")

    def evaluate(self, data: Any = [], model: Any = {}, configProperties: Any = {}) -> list[dict[str, Any]]:
        raise NotImplementedError(f"{type(self).__name__} must implement evaluate(self, data=[], "
                                  "model={}, configProperties={}) returning a list of "
                                  "{name, value, valueType} metrics")
