"""The built-in `retail-sales` engine and its synthetic data generator.

Loading the engine class imports neither numpy, pandas nor torch (the CLI loads it to read its
parameter schemas before a worker runs it); the generator, which needs them, is imported on use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .engine import RetailSalesEngine

if TYPE_CHECKING:
    from .synthetic import generate_retail, write_retail_dataset

__all__ = ["RetailSalesEngine", "generate_retail", "write_retail_dataset"]


def __getattr__(name: str) -> Any:
    if name in ("generate_retail", "write_retail_dataset"):
        from . import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
