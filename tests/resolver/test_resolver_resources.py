"""Resource keys become a typed ResourceRequest, from parameters or specifications, with provenance."""
from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from runtime.errors import ConfigError
from runtime.resolver import CLI, ENGINE, MLINSTANCE, RUN, Layer, resolve
from runtime.resources import ResourceRequest


class Params(BaseModel):
    learning_rate: float = 0.1


def spark_task(parameters=None, **specification):
    entry = {"name": "train",
             "parameters": [{"key": k, "value": v} for k, v in (parameters or {}).items()]}
    if specification:
        entry["specification"] = {"type": "SparkTaskSpec", "name": "Spark", **specification}
    return entry


def test_spark_resources_from_parameters():
    layers = [Layer(MLINSTANCE, tasks=[spark_task({
        "driverMemory": "2048", "driverCores": "2", "executorMemory": "4096",
        "executorCores": "4", "numExecutors": "3", "learning_rate": "0.2"})])]

    resolved = resolve("train", Params, layers)

    assert resolved.resources == ResourceRequest(
        driver_memory_mb=2048, driver_cores=2, executor_memory_mb=4096, executor_cores=4,
        num_executors=3)
    assert "driverMemory" not in resolved.values
    assert resolved.values == {"learning_rate": 0.2}
    assert resolved.resource_provenance == {
        "driver_memory_mb": MLINSTANCE, "driver_cores": MLINSTANCE,
        "executor_memory_mb": MLINSTANCE, "executor_cores": MLINSTANCE,
        "num_executors": MLINSTANCE}


def test_spark_resources_from_a_specification_numbers_or_strings():
    layers = [Layer(ENGINE, tasks=[spark_task(driverMemoryInMB=1024, driverCores="1",
                                              executorMemoryInMB="8192", executorCores=2,
                                              numExecutors=5)])]

    resources = resolve("train", Params, layers).resources

    assert (resources.driver_memory_mb, resources.driver_cores, resources.executor_memory_mb,
            resources.executor_cores, resources.num_executors) == (1024, 1, 8192, 2, 5)


def test_within_one_layer_the_specification_wins():
    layers = [Layer(MLINSTANCE, tasks=[spark_task({"driverMemory": "1024", "executorCores": "2"},
                                                  driverMemoryInMB=3072)])]

    resolved = resolve("train", Params, layers)

    assert resolved.resources.driver_memory_mb == 3072
    assert resolved.resources.executor_cores == 2


def test_across_layers_the_later_layer_wins_whatever_the_form():
    layers = [Layer(ENGINE, tasks=[spark_task(driverMemoryInMB=3072, numExecutors=2)]),
              Layer(MLINSTANCE, tasks=[spark_task({"driverMemory": "1024"})]),
              Layer(RUN, tasks=[spark_task(numExecutors="8")]),
              Layer(CLI, overrides={"executorMemory": 2048})]

    resolved = resolve("train", Params, layers)

    assert resolved.resources.driver_memory_mb == 1024
    assert resolved.resources.num_executors == 8
    assert resolved.resources.executor_memory_mb == 2048
    assert resolved.resource_provenance == {"driver_memory_mb": MLINSTANCE,
                                            "num_executors": RUN, "executor_memory_mb": CLI}


def test_container_cpus_and_gpus_from_specification_and_parameters():
    spec_layer = Layer(ENGINE, tasks=[{"name": "train", "specification": {
        "type": "ContainerTaskSpec", "name": "Python", "cpus": "4", "gpus": "1"}}])
    param_layer = Layer(RUN, tasks=[{"name": "train", "parameters": [
        {"key": "gpus", "value": "0"}]}])

    resolved = resolve("train", Params, [spec_layer, param_layer])

    assert resolved.resources.cpus == 4
    assert resolved.resources.gpus == 0
    assert resolved.resource_provenance == {"cpus": ENGINE, "gpus": RUN}


def test_spark_settings_pass_through_as_strings():
    layers = [Layer(MLINSTANCE, tasks=[spark_task({"spark.sql.shuffle.partitions": "200"})]),
              Layer(CLI, overrides={"spark.executor.memoryOverhead": 512,
                                    "spark.sql.shuffle.partitions": "64"})]

    resolved = resolve("train", Params, layers)

    assert resolved.resources.spark_conf == {"spark.sql.shuffle.partitions": "64",
                                             "spark.executor.memoryOverhead": "512"}
    assert resolved.resource_provenance["spark.sql.shuffle.partitions"] == CLI
    assert "spark.sql.shuffle.partitions" not in resolved.values


def error_for(layers) -> str:
    with pytest.raises(ConfigError) as caught:
        resolve("train", Params, layers)
    return caught.value.detail


def test_memory_with_a_unit_says_memory_is_in_mb():
    detail = error_for([Layer(MLINSTANCE, tasks=[spark_task({"driverMemory": "2g"})])])

    assert "resource 'driverMemory' = '2g' from layer 'mlInstance'" in detail
    assert "memory must be an integer number of MB" in detail


def test_bad_memory_in_a_specification_names_the_specification_field():
    detail = error_for([Layer(ENGINE, tasks=[spark_task(executorMemoryInMB="4GB")])])

    assert "resource 'executorMemoryInMB' (specification) = '4GB' from layer 'engine'" in detail


@pytest.mark.parametrize("key, value", [("numExecutors", "-1"), ("executorCores", "0"),
                                        ("driverMemory", "-512"), ("cpus", "0")])
def test_non_positive_resources_are_errors(key, value):
    detail = error_for([Layer(RUN, overrides={key: value})])

    assert f"resource '{key}' = '{value}' from layer 'run': expected a positive integer" in detail


def test_negative_gpus_is_an_error():
    assert "expected a non-negative integer" in error_for([Layer(RUN, overrides={"gpus": "-1"})])


@pytest.mark.parametrize("value", ["two", "1.5", "", True])
def test_non_integer_counts_are_errors(value):
    detail = error_for([Layer(RUN, overrides={"driverCores": value})])

    assert "resource 'driverCores'" in detail
    assert "expected a whole number" in detail


def test_all_bad_resources_are_reported_together():
    with pytest.raises(ConfigError) as caught:
        resolve("train", Params, [Layer(RUN, overrides={"driverMemory": "2g",
                                                        "numExecutors": "-1"})])

    assert len(caught.value.extra["problems"]) == 2


def test_a_bad_resource_hidden_by_a_later_layer_is_not_an_error():
    layers = [Layer(ENGINE, overrides={"driverMemory": "2g"}),
              Layer(RUN, overrides={"driverMemory": "2048"})]

    assert resolve("train", Params, layers).resources.driver_memory_mb == 2048


def test_resource_request_is_strict_on_its_own():
    with pytest.raises(ValidationError):
        ResourceRequest(driver_memory_mb=0)
    with pytest.raises(ValidationError):
        ResourceRequest(memory="2g")
    assert ResourceRequest().is_empty()
    assert not ResourceRequest(spark_conf={"spark.a": "1"}).is_empty()
