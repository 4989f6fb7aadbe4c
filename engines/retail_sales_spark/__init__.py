"""The built-in `retail-sales-spark` engine (kind pyspark); pyspark is imported inside the stages."""
from .engine import RetailSalesSparkEngine

__all__ = ["RetailSalesSparkEngine"]
