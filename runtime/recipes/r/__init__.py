"""R recipes (type R): the platform's R/applicationTrainer.R and R/applicationScorer.R reference
classes, run by one Rscript per task (engine.py, driver.R) or by a child forked from a warm R
parent (warm.py, parent.R, warm_parent.py); what the host must have, checked before a run starts
(host.py); the platform's R framework, ml.runtime.r and evaluators.r, is runtime/compat/r."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ...artifacts import RecipeInfo
    from ..base import RecipeEngine

TRAINER = "R/applicationTrainer.R"
SCORER = "R/applicationScorer.R"
EVALUATOR = "R/applicationEvaluator.R"


def engine_for(recipe_dir: Path, info: "RecipeInfo") -> "type[RecipeEngine]":
    from .engine import engine_for as build

    return build(recipe_dir, info)
