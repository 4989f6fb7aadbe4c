"""`AbstractTrainer` of class-based recipes: `train(self, config={})` reads its data, trains, and
writes the model under `config["modelPATH"]` (logs under `config["logsPATH"]`)."""
from __future__ import annotations

from typing import Any


class AbstractTrainer:
    def train(self, config: Any = {}) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must implement train(self, config={{}})")
