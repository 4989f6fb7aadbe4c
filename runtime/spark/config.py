"""The Spark configuration a ResourceRequest asks for: pure, no pyspark, so `--dry-run` can show it.

One function, `spark_config`, turns the typed request and the configured master into the exact
`spark.*` settings a session is built with; the pool keys its warm sessions by the result.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping

from pydantic import BaseModel, ConfigDict

from ..errors import ConfigError
from ..resources import ResourceRequest

__all__ = ["DEFAULT_CONF", "DEFAULT_DRIVER_MEMORY_MB", "ENV_MASTER", "SPARK2_RECIPE_CONF", "SparkConfig",
           "parse_memory_mb", "resolve_master", "spark_config"]

ENV_MASTER = "MLRUNTIME_SPARK_MASTER"
DEFAULT_MASTER = "local"
# Spark's own default is 1g too; naming it makes the effective driver memory explicit in every record.
DEFAULT_DRIVER_MEMORY_MB = 1024
DEFAULT_LOCAL_CLUSTER_EXECUTOR_MB = 1024

# The house defaults: no UI (nothing listens beyond what a run needs), Arrow for toPandas and
# pandas UDFs, no console progress bars in log files. Any of them can be overridden by a spark.* key.
DEFAULT_CONF: dict[str, str] = {
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.session.timeZone": "UTC",
    # A fresh Python worker (forked from the daemon) per task: a warm JVM serves one recipe after
    # another, and a reused Python worker would keep the previous recipe's modules imported.
    "spark.python.worker.reuse": "false",
}
# The platform ran recipes on Spark 2; a recipe run (not a built-in engine) gets Spark 2's behaviour
# where Spark 3 and 4 changed it, set on the run's own session. A `spark.*` parameter of the run
# naming the same key wins. Each, and what a Spark 2 recipe hits without it:
SPARK2_RECIPE_CONF: dict[str, str] = {
    # Date patterns through SimpleDateFormat, as in Spark 2: week-based letters (`w`, `Y`, `u`) and
    # lenient parsing (`MM/dd/yy` reading 2/5/10). Spark >= 3 raises SparkUpgradeException.
    "spark.sql.legacy.timeParserPolicy": "LEGACY",
    # No ANSI SQL mode (Spark 4 turned it on): a bad cast or a division by zero gives null instead
    # of failing the job, an integer overflow wraps.
    "spark.sql.ansi.enabled": "false",
    # Writes into tables cast values as Spark 2 did, instead of ANSI store assignment's errors.
    "spark.sql.storeAssignmentPolicy": "LEGACY",
    # `spark.conf.set` of a core setting (spark.executor.memory...) is ignored, not an error.
    "spark.sql.legacy.setCommandRejectsSparkCoreConfs": "false",
    # stddev/variance of a single row is NaN, not null.
    "spark.sql.legacy.statisticalAggregate": "true",
}
# Local masters live on this machine only: the driver binds the loopback address.
LOCAL_ONLY_CONF: dict[str, str] = {
    "spark.driver.host": "127.0.0.1",
    "spark.driver.bindAddress": "127.0.0.1",
}

_MEMORY = re.compile(r"\s*(\d+)\s*([kmgt]?)b?\s*", re.IGNORECASE)
_LOCAL_CLUSTER = re.compile(r"local-cluster\[\s*(\d+)\s*,\s*(\d+)\s*,\s*(\d+)\s*\]")


def parse_memory_mb(text: str | int | None) -> int | None:
    """A JVM memory string (`512m`, `2g`, `1024`: MiB without a unit, as Spark reads it) in MiB."""
    if text is None:
        return None
    if isinstance(text, int):
        return text
    match = _MEMORY.fullmatch(str(text))
    if match is None:
        raise ConfigError(f"Cannot read the memory size {text!r}: expected e.g. 512m or 2g")
    number, unit = int(match.group(1)), match.group(2).lower()
    factor = {"k": 1 / 1024, "": 1, "m": 1, "g": 1024, "t": 1024 * 1024}[unit]
    return max(1, int(number * factor))


def resolve_master(explicit: str | None = None, conf: Mapping[str, str] | None = None,
                   environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(master, where it came from): an explicit setting (flag, server setting) beats
    $MLRUNTIME_SPARK_MASTER, which beats a `spark.master` task parameter; `local` by default."""
    environ = os.environ if environ is None else environ
    if explicit:
        return explicit.strip(), "setting"
    if environ.get(ENV_MASTER, "").strip():
        return environ[ENV_MASTER].strip(), f"${ENV_MASTER}"
    if conf and conf.get("spark.master", "").strip():
        return conf["spark.master"].strip(), "spark.master parameter"
    return DEFAULT_MASTER, "default"


class SparkConfig(BaseModel):
    """The Spark configuration of one run, as planned. `conf` holds every `spark.*` setting the
    session is built with (the typed sizes included), `master` the master URL."""

    model_config = ConfigDict(frozen=True)

    master: str
    master_source: str = "default"
    driver_memory_mb: int
    driver_cores: int | None = None
    executor_memory_mb: int | None = None
    executor_cores: int | None = None
    num_executors: int | None = None
    conf: dict[str, str]

    @property
    def is_local(self) -> bool:
        return self.master.startswith(("local[", "local-cluster[")) or self.master == "local"

    def key(self, env: Mapping[str, str] | None = None) -> str:
        """The resource shape: two runs with the same key may share one JVM. The driver memory,
        every conf and the worker's environment are part of it (all fixed when a JVM starts)."""
        return json.dumps({"master": self.master, "conf": self.conf, "env": dict(env or {})},
                          sort_keys=True)

    def to_record(self) -> dict[str, Any]:
        return {"master": self.master, "masterSource": self.master_source,
                "driverMemory": f"{self.driver_memory_mb}m", "driverCores": self.driver_cores,
                "executorMemory": (f"{self.executor_memory_mb}m"
                                   if self.executor_memory_mb is not None else None),
                "executorCores": self.executor_cores, "numExecutors": self.num_executors,
                "conf": dict(self.conf)}

    def describe(self) -> str:
        """Aligned lines for `--dry-run` and `--explain`."""
        rows = [("spark master", f"{self.master} ({self.master_source})"),
                ("driver", f"{self.driver_memory_mb} MB" + (f", {self.driver_cores} cores"
                                                             if self.driver_cores else ""))]
        if self.num_executors or self.executor_cores or self.executor_memory_mb:
            rows.append(("executors", f"{self.num_executors or '?'} x {self.executor_cores or '?'}"
                                      f" cores, {self.executor_memory_mb or '?'} MB each"))
        shown = {k: v for k, v in self.conf.items() if k not in _TYPED_KEYS}
        rows += [(key, value) for key, value in sorted(shown.items())]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


_TYPED_KEYS = frozenset({"spark.driver.memory", "spark.driver.cores", "spark.executor.memory",
                         "spark.executor.cores", "spark.executor.instances"})


def spark_config(resources: ResourceRequest, *, default_cores: int, master: str | None = None,
                 environ: Mapping[str, str] | None = None) -> SparkConfig:
    """The Spark configuration `resources` asks for.

    In local mode the master is `local[N]`: N is `executorCores x numExecutors` when executors are
    requested, else `driverCores`, else `default_cores` (the dispatcher's thread count). A master
    of plain `local-cluster` becomes `local-cluster[numExecutors, executorCores, executorMemory]`
    (real executor JVMs). Any other master (`spark://`, `k8s://`, `yarn`) is used as given, with
    the executor keys as Spark settings. The typed sizes beat the same `spark.*` key passed through.
    """
    passthrough = {k: str(v) for k, v in resources.spark_conf.items() if k != "spark.master"}
    base, source = resolve_master(master, resources.spark_conf, environ)
    driver_memory = (resources.driver_memory_mb
                     or parse_memory_mb(passthrough.get("spark.driver.memory"))
                     or DEFAULT_DRIVER_MEMORY_MB)
    driver_cores = resources.driver_cores
    executor_memory = resources.executor_memory_mb or parse_memory_mb(passthrough.get("spark.executor.memory"))
    executor_cores = resources.executor_cores or _int(passthrough.get("spark.executor.cores"))
    num_executors = resources.num_executors or _int(passthrough.get("spark.executor.instances"))
    wants_executors = resources.num_executors is not None or resources.executor_cores is not None

    if base in ("local", "local[*]") :
        cores = ((executor_cores or 1) * (num_executors or 1) if wants_executors
                 else driver_cores or max(1, default_cores))
        resolved = f"local[{cores}]"
        driver_cores = driver_cores or cores
    elif base == "local-cluster":
        num_executors, executor_cores = num_executors or 1, executor_cores or 1
        executor_memory = executor_memory or DEFAULT_LOCAL_CLUSTER_EXECUTOR_MB
        resolved = f"local-cluster[{num_executors},{executor_cores},{executor_memory}]"
    else:
        resolved = base
        match = _LOCAL_CLUSTER.fullmatch(base)
        if match:  # the executors are the ones the master names
            num_executors, executor_cores, executor_memory = (int(g) for g in match.groups())

    conf = dict(DEFAULT_CONF)
    if resolved.startswith("local"):
        conf.update(LOCAL_ONLY_CONF)
        # Spark's 200 shuffle partitions are 200 tasks per stage on a few local cores.
        conf["spark.sql.shuffle.partitions"] = str(2 * _local_cores(resolved))
    conf.update(passthrough)
    conf["spark.driver.memory"] = f"{driver_memory}m"
    if driver_cores is not None:
        conf["spark.driver.cores"] = str(driver_cores)
    if executor_memory is not None:
        conf["spark.executor.memory"] = f"{executor_memory}m"
    if executor_cores is not None:
        conf["spark.executor.cores"] = str(executor_cores)
    if num_executors is not None:
        conf["spark.executor.instances"] = str(num_executors)
    return SparkConfig(master=resolved, master_source=source, driver_memory_mb=driver_memory,
                       driver_cores=driver_cores, executor_memory_mb=executor_memory,
                       executor_cores=executor_cores, num_executors=num_executors,
                       conf=dict(sorted(conf.items())))


def _local_cores(master: str) -> int:
    match = _LOCAL_CLUSTER.fullmatch(master)
    if match:
        return int(match.group(1)) * int(match.group(2))
    inner = master[len("local["):-1] if master.startswith("local[") else "1"
    return int(inner) if inner.isdigit() else (os.cpu_count() or 1)


def _int(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"Expected a whole number of cores or executors, got {text!r}") from None
