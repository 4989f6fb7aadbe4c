"""The built-in `retail-sales` engine and its synthetic data generator (torch is imported lazily)."""
from .engine import RetailSalesEngine
from .synthetic import generate_retail, write_retail_dataset

__all__ = ["RetailSalesEngine", "generate_retail", "write_retail_dataset"]
