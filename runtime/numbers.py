"""How numbers are shown to people (the CLI's summaries, progress lines and log lines): plain
digits with thousands separators, not `2.833e+04`."""
from __future__ import annotations

import math


def readable(value: float) -> str:
    """28330.41 -> '28,330.4'; 5175.0 -> '5,175'; 0.047713 -> '0.04771'; 12.3456 -> '12.35';
    scientific only for the very large and the very small (1.2e-07)."""
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    size = abs(value)
    if size >= 1e15 or 0 < size < 1e-4:
        return f"{value:.4g}"
    if value.is_integer():
        return f"{int(value):,}"
    if size >= 1000:
        return f"{value:,.1f}"
    return f"{value:.4g}"
