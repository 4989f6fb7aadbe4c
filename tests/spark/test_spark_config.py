"""The Spark configuration a ResourceRequest asks for (pure: no JVM), and the import rules."""
from __future__ import annotations

import subprocess
import sys

import pytest

from runtime.errors import ConfigError, MissingDependency
from runtime.resources import ResourceRequest
from runtime.spark.config import ENV_MASTER, parse_memory_mb, spark_config


def config(resources=None, **kwargs):
    kwargs.setdefault("environ", {})
    return spark_config(resources or ResourceRequest(), default_cores=kwargs.pop("default_cores", 2), **kwargs)


def test_local_cores_from_driver_cores_and_memory_in_mb():
    planned = config(ResourceRequest(driver_cores=3, driver_memory_mb=1536))
    assert planned.master == "local[3]"
    assert planned.conf["spark.driver.memory"] == "1536m" and planned.conf["spark.driver.cores"] == "3"


def test_local_cores_from_executors_when_executors_are_requested():
    planned = config(ResourceRequest(driver_cores=1, executor_cores=2, num_executors=3,
                                     executor_memory_mb=512))
    assert planned.master == "local[6]"
    assert planned.conf["spark.executor.memory"] == "512m"
    assert planned.conf["spark.executor.cores"] == "2" and planned.conf["spark.executor.instances"] == "3"


def test_defaults_ui_off_arrow_on_loopback_and_the_hosts_cores():
    planned = config(default_cores=2)
    assert planned.master == "local[2]" and planned.driver_memory_mb == 1024
    assert planned.conf["spark.ui.enabled"] == "false"
    assert planned.conf["spark.sql.execution.arrow.pyspark.enabled"] == "true"
    assert planned.conf["spark.driver.bindAddress"] == "127.0.0.1"


def test_spark_parameters_pass_through_and_typed_keys_win():
    planned = config(ResourceRequest(driver_memory_mb=2048, spark_conf={
        "spark.sql.shuffle.partitions": "7", "spark.driver.memory": "4g", "spark.ui.enabled": "true"}))
    assert planned.conf["spark.sql.shuffle.partitions"] == "7"
    assert planned.conf["spark.ui.enabled"] == "true"
    assert planned.conf["spark.driver.memory"] == "2048m"
    assert config(ResourceRequest(spark_conf={"spark.driver.memory": "2g"})).driver_memory_mb == 2048


def test_master_from_setting_then_environment_then_parameter():
    request = ResourceRequest(num_executors=2, executor_cores=1, executor_memory_mb=768,
                              spark_conf={"spark.master": "spark://param:7077"})
    assert config(request).master == "spark://param:7077"
    assert config(request, environ={ENV_MASTER: "local-cluster"}).master == "local-cluster[2,1,768]"
    explicit = config(request, master="k8s://https://k8s:6443", environ={ENV_MASTER: "local"})
    assert explicit.master == "k8s://https://k8s:6443" and explicit.master_source == "setting"
    assert "spark.driver.bindAddress" not in explicit.conf  # not a local master
    assert explicit.conf["spark.executor.instances"] == "2"


def test_local_cluster_master_names_its_executors():
    planned = config(master="local-cluster[1,1,1024]")
    assert (planned.num_executors, planned.executor_cores, planned.executor_memory_mb) == (1, 1, 1024)
    assert planned.conf["spark.executor.memory"] == "1024m"


def test_a_different_driver_memory_is_a_different_shape():
    small = config(ResourceRequest(driver_memory_mb=512))
    assert small.key() == config(ResourceRequest(driver_memory_mb=512)).key()
    assert small.key() != config(ResourceRequest(driver_memory_mb=1024)).key()


def test_memory_strings():
    assert [parse_memory_mb(t) for t in ("512m", "2g", "1024", "2048k")] == [512, 2048, 1024, 2]
    with pytest.raises(ConfigError):
        parse_memory_mb("lots")


def test_describe_shows_master_and_memory():
    text = config(ResourceRequest(driver_memory_mb=768, driver_cores=2)).describe()
    assert "local[2]" in text and "768 MB" in text and "spark.ui.enabled" in text


@pytest.mark.parametrize("code", [
    "import runtime, runtime.backends.pyspark, runtime.spark.pool, engines.retail_sales_spark",
    "import sys; sys.argv = ['run', '--help']; import runtime.cli.main as m; m.main()",
])
def test_imports_and_help_never_import_pyspark(code):
    probe = f"""
import sys
try:
    exec({code!r})
except SystemExit:
    pass
print('PYSPARK' if 'pyspark' in sys.modules else 'CLEAN')
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == "CLEAN", out.stderr


def test_missing_pyspark_is_missing_dependency_with_install_command(monkeypatch, tmp_path):
    from runtime.backends import WorkerSpec
    from runtime.backends.pyspark import PySparkBackend
    from runtime.dispatch import HostInfo, plan as make_plan
    from runtime.spark.session import require_pyspark

    monkeypatch.setitem(sys.modules, "pyspark", None)  # `import pyspark` now raises ImportError
    with pytest.raises(MissingDependency) as caught:
        require_pyspark()
    assert "pip install 'mlinstance-runtime[spark]'" in caught.value.detail
    plan = make_plan(engine_kind="pyspark", resources=ResourceRequest(), host=HostInfo(cpu_count=2))
    spec = WorkerSpec(run_id="r", engine="retail-sales-spark", mode="train", run_dir=tmp_path)
    with pytest.raises(MissingDependency, match=r"mlinstance-runtime\[spark\]"):
        PySparkBackend().submit(spec=spec, plan=plan, log_path=tmp_path / "log")
