"""The typed hardware request of one task: Spark driver/executor sizes, container CPUs/GPUs, spark.* conf.

Sensei spells the same request two ways (task parameters `driverMemory`, specification fields
`driverMemoryInMB`); both tables live here so the resolver and the params-file reader share them.
"""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Task-parameter key -> ResourceRequest field. Memory parameters are in MB, as in Sensei.
PARAMETER_KEYS: dict[str, str] = {
    "driverMemory": "driver_memory_mb",
    "driverCores": "driver_cores",
    "executorMemory": "executor_memory_mb",
    "executorCores": "executor_cores",
    "numExecutors": "num_executors",
    "cpus": "cpus",
    "gpus": "gpus",
    # Seconds between samples of the run's system metrics (runtime.sysmetrics); 0 turns them off.
    "systemMetricsIntervalSeconds": "system_metrics_interval_s",
}

# Specification field (SparkTaskSpec / ContainerTaskSpec) -> ResourceRequest field.
SPECIFICATION_KEYS: dict[str, str] = {
    "driverMemoryInMB": "driver_memory_mb",
    "driverCores": "driver_cores",
    "executorMemoryInMB": "executor_memory_mb",
    "executorCores": "executor_cores",
    "numExecutors": "num_executors",
    "cpus": "cpus",
    "gpus": "gpus",
}

MEMORY_FIELDS = frozenset({"driver_memory_mb", "executor_memory_mb"})

# Parameters with this prefix are Spark configuration, passed through to the session as strings.
SPARK_CONF_PREFIX = "spark."


class ResourceRequest(BaseModel):
    """What a task asks of its backend; `None` means "the backend's default"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    driver_memory_mb: int | None = Field(default=None, gt=0)
    driver_cores: int | None = Field(default=None, gt=0)
    executor_memory_mb: int | None = Field(default=None, gt=0)
    executor_cores: int | None = Field(default=None, gt=0)
    num_executors: int | None = Field(default=None, gt=0)
    cpus: int | None = Field(default=None, gt=0)
    # Zero GPUs is a meaningful request: "run this on the CPU". A fraction below 1 (0.5) asks
    # for a share of one device, so two small runs can share it; above 1 only whole numbers.
    gpus: int | float | None = Field(default=None, ge=0)
    system_metrics_interval_s: int | None = Field(default=None, ge=0)
    spark_conf: dict[str, str] = Field(default_factory=dict)

    @field_validator("gpus")
    @classmethod
    def _whole_or_share(cls, value: int | float | None) -> int | float | None:
        if value is None or isinstance(value, int):
            return value
        if float(value).is_integer():
            return int(value)
        if value > 1:
            raise ValueError("a GPU request above 1 must be a whole number; a fraction (such "
                             "as 0.5) asks for a share of one GPU")
        return float(value)

    def is_empty(self) -> bool:
        return not self.spark_conf and all(
            getattr(self, name) is None for name in type(self).model_fields if name != "spark_conf")
