"""Task names of an MLInstance: `train`, `score` and `featurePipeline` (alias `fp`)."""
from __future__ import annotations

from .errors import ValidationFailed

TRAIN = "train"
SCORE = "score"
FEATURE_PIPELINE = "featurePipeline"

TASK_NAMES = (TRAIN, SCORE, FEATURE_PIPELINE)

# Sensei accepted `fp` and `featurePipeline` for the same task; we store one canonical name.
_ALIASES = {"fp": FEATURE_PIPELINE, "featurepipeline": FEATURE_PIPELINE,
            "train": TRAIN, "score": SCORE}


def canonical_task(name: str) -> str:
    """The canonical name of a task (`fp` -> `featurePipeline`); other names are kept as given."""
    return _ALIASES.get(name.strip().lower(), name) if isinstance(name, str) else name


def run_mode(mode: str) -> str:
    """A run's `mode` (case-insensitive) as a canonical task name, or a clear error."""
    canonical = _ALIASES.get(str(mode).strip().lower())
    if canonical is None:
        raise ValidationFailed(
            f"Unknown run mode {mode!r}: expected one of train, score, featurePipeline (or fp)")
    return canonical
