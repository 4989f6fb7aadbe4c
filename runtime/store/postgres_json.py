"""Documents as the PostgreSQL store writes them: compact JSON text that JSONB accepts."""
from __future__ import annotations

import json
import math
from typing import Any


def _finite(value: Any) -> Any:
    """JSONB has no NaN or Infinity: they become null, as a strict JSON encoder would refuse them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def dumps(value: Any) -> str:
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), separators=(",", ":"), allow_nan=False)


def has_nul(value: Any) -> bool:
    """Whether a string in `value` (keys too) holds a NUL byte, which no PostgreSQL text can."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(has_nul(k) or has_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(has_nul(v) for v in value)
    return False
