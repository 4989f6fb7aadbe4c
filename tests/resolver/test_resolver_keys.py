"""Unknown keys, extra keys, and malformed layers: each a ConfigError that says where."""
from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, Field

from runtime.errors import ConfigError
from runtime.resolver import CLI, ENGINE, MLINSTANCE, RUN, Layer, resolve


class Params(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    learning_rate: float = 0.1
    num_trees: int = 10
    metrics: list[str] = Field(default_factory=list, alias="evaluation.metrics")


class Open(BaseModel):
    model_config = ConfigDict(extra="allow")

    learning_rate: float = 0.1


def error_for(layers, schema=Params, **kwargs) -> str:
    with pytest.raises(ConfigError) as caught:
        resolve("train", schema, layers, **kwargs)
    return caught.value.detail


def test_unknown_key_suggests_the_closest_known_key():
    detail = error_for([Layer(RUN, overrides={"learning_rat": "0.2"})])

    assert "unknown parameter 'learning_rat' for task 'train' from layer 'run'" in detail
    assert "did you mean 'learning_rate'?" in detail


def test_unknown_key_suggests_an_alias_by_its_api_name():
    detail = error_for([Layer(RUN, overrides={"evaluation.metric": "mae"})])

    assert "did you mean 'evaluation.metrics'?" in detail


def test_unknown_key_differing_only_in_case_suggests_the_right_case():
    detail = error_for([Layer(RUN, overrides={"NUM_TREES": "3"})])

    assert "did you mean 'num_trees'?" in detail


def test_unknown_key_with_nothing_close_lists_the_declared_keys():
    detail = error_for([Layer(MLINSTANCE, tasks=[{"name": "train", "parameters": [
        {"key": "zzz", "value": "1"}]}])])

    assert "unknown parameter 'zzz'" in detail
    assert "from layer 'mlInstance'" in detail
    assert "'evaluation.metrics', 'learning_rate', 'num_trees'" in detail


def test_extra_keys_are_kept_as_strings_with_provenance_when_the_engine_accepts_them():
    layers = [Layer(ENGINE, tasks=[{"name": "train", "parameters": [
                  {"key": "custom.flag", "value": "on"}]}]),
              Layer(CLI, overrides={"batch": 64, "learning_rate": "0.5", "cols": ["a", "b"]})]

    resolved = resolve("train", Params, layers, accepts_extra_keys=True)

    assert resolved.values["custom.flag"] == "on"
    assert resolved.values["batch"] == "64"
    assert resolved.values["cols"] == "a,b"
    assert resolved.values["learning_rate"] == 0.5
    assert resolved.provenance["custom.flag"] == ENGINE
    assert resolved.provenance["batch"] == CLI
    assert resolved.extra_keys == {"custom.flag", "batch", "cols"}


def test_extra_keys_reach_the_params_instance_when_the_schema_allows_extra():
    resolved = resolve("train", Open, [Layer(RUN, overrides={"depth": 3})],
                       accepts_extra_keys=True)

    assert resolved.params.model_extra == {"depth": "3"}


def test_extra_keys_are_still_errors_without_the_flag():
    detail = error_for([Layer(RUN, overrides={"depth": "3"})], schema=Open)

    assert "unknown parameter 'depth'" in detail


def test_without_a_schema_every_key_is_an_extra_or_unknown():
    resolved = resolve("score", None, [Layer(RUN, overrides={"a": 1})], accepts_extra_keys=True)
    assert resolved.params is None
    assert resolved.values == {"a": "1"}
    assert resolved.provenance == {"a": RUN}

    detail = error_for([Layer(RUN, overrides={"a": 1})], schema=None)
    assert "the engine declares no parameters" in detail


def test_parameter_without_key_names_the_layer():
    layers = [Layer(MLINSTANCE, tasks=[{"name": "train", "parameters": [
        {"key": "num_trees", "value": "2"}, {"value": "3"}]}])]

    detail = error_for(layers)

    assert "layer 'mlInstance', task 'train': parameters[1] has no 'key'" in detail


def test_parameter_without_value_names_key_and_layer():
    layers = [Layer(RUN, tasks=[{"name": "train", "parameters": [{"key": "num_trees"}]}])]

    assert "layer 'run', task 'train': parameter 'num_trees' has no 'value'" in error_for(layers)


def test_malformed_entries_in_other_tasks_are_still_reported():
    layers = [Layer(ENGINE, tasks=[{"parameters": []}, {"name": "train"}])]

    assert "layer 'engine': tasks[0] has no 'name'" in error_for(layers)


def test_a_task_listed_twice_in_one_layer_is_an_error():
    layers = [Layer(MLINSTANCE, tasks=[{"name": "fp"}, {"name": "featurePipeline"}])]

    with pytest.raises(ConfigError) as caught:
        resolve("featurePipeline", Params, layers)

    assert ("layer 'mlInstance' lists task 'featurePipeline' more than once "
            "(tasks[0] 'fp', tasks[1] 'featurePipeline')") in caught.value.detail


@pytest.mark.parametrize("layer, message", [
    (Layer(RUN, tasks={"name": "train"}), "layer 'run': 'tasks' must be a list"),
    (Layer(RUN, tasks=[{"name": "train", "parameters": {"a": 1}}]), "'parameters' must be a list"),
    (Layer(RUN, tasks=[{"name": "train", "specification": "big"}]),
     "'specification' must be an object"),
    (Layer(RUN, tasks=["train"]), "layer 'run': tasks[0] is not a task object"),
    (Layer(RUN, overrides=["a=1"]), "layer 'run': overrides must be a key -> value mapping"),
])
def test_wrongly_shaped_layers_are_errors_naming_the_layer(layer, message):
    assert message in error_for([layer])


def test_unknown_keys_and_bad_values_are_reported_together():
    with pytest.raises(ConfigError) as caught:
        resolve("train", Params, [Layer(RUN, overrides={"num_tres": "1", "num_trees": "x"})])

    problems = caught.value.extra["problems"]
    assert len(problems) == 2
    assert any("did you mean 'num_trees'" in p for p in problems)
    assert any("'num_trees' = 'x'" in p for p in problems)
