"""Spark for the pyspark backend: configuration from a ResourceRequest (pure), sessions, the warm
worker pool and error translation. Importing this package never imports pyspark."""
from __future__ import annotations

from .config import ENV_MASTER, SparkConfig, parse_memory_mb, spark_config

__all__ = ["ENV_MASTER", "SparkConfig", "parse_memory_mb", "spark_config"]
