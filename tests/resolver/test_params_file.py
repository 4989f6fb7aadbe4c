"""`-p key=value` pairs and `--params FILE.json|yaml` read into plain dicts, with clear errors."""
from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from runtime.errors import ConfigError
from runtime.params_file import load_params_file, parse_overrides, read_params_file
from runtime.resolver import CLI, Layer, resolve


def test_overrides_split_on_the_first_equals_sign():
    assert parse_overrides(["learning_rate=0.3", "filter=a=b", "empty=", " spaced =x"]) == {
        "learning_rate": "0.3", "filter": "a=b", "empty": "", "spaced": "x"}


def test_later_override_pairs_win():
    assert parse_overrides(["a=1", "a=2"]) == {"a": "2"}


def test_an_override_without_equals_is_an_error_naming_it():
    with pytest.raises(ConfigError) as caught:
        parse_overrides(["a=1", "learning_rate"])

    assert "'learning_rate' has no '='" in caught.value.detail
    assert "key=value" in caught.value.detail


def test_an_override_without_a_key_is_an_error():
    with pytest.raises(ConfigError, match="'=3' has no key"):
        parse_overrides(["=3"])


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_flat_json_file(tmp_path):
    path = write(tmp_path, "p.json", '{"learning_rate": 0.3, "early_stop": false, "n": "5"}')

    assert load_params_file(path) == {"learning_rate": 0.3, "early_stop": False, "n": "5"}


@pytest.mark.parametrize("name", ["p.yaml", "p.yml", "P.YAML"])
def test_flat_yaml_file(tmp_path, name):
    path = write(tmp_path, name, "learning_rate: 1e-3\nearly_stop: no\n"
                                 "evaluation.metrics: [mae, rmse]\nday: 2024-01-02\n")

    assert load_params_file(str(path)) == {"learning_rate": "1e-3", "early_stop": False,
                                           "evaluation.metrics": ["mae", "rmse"],
                                           "day": "2024-01-02"}


TASKS = [
    {"name": "train", "parameters": [{"key": "learning_rate", "value": "0.3"},
                                     {"key": "token", "value": "t0k", "secret": True},
                                     {"key": "driverMemory", "value": "1024"}],
     "specification": {"type": "SparkTaskSpec", "driverMemoryInMB": 4096, "numExecutors": 2}},
    {"name": "fp", "parameters": [{"key": "window", "value": "7"}]},
]


def test_task_list_file_takes_the_tasks_parameters_and_specification(tmp_path):
    path = write(tmp_path, "tasks.json", json.dumps(TASKS))

    params = read_params_file(path, task="train")

    assert params.values == {"learning_rate": "0.3", "token": "t0k", "driverMemory": 4096,
                             "numExecutors": 2}
    assert params.secret_keys == {"token"}
    assert load_params_file(path, task="featurePipeline") == {"window": "7"}


def test_a_saved_mlinstance_is_a_task_list_file(tmp_path):
    path = write(tmp_path, "mli.json", json.dumps({"name": "m", "engineId": "e", "tasks": TASKS}))

    assert load_params_file(path, task="fp") == {"window": "7"}


def test_a_file_feeds_the_resolvers_cli_layer(tmp_path):
    class Train(BaseModel):
        learning_rate: float = 0.1
        token: str = ""

    path = write(tmp_path, "tasks.yaml", json.dumps(TASKS))  # JSON is YAML too
    params = read_params_file(path, task="train")
    layer = Layer(CLI, overrides={**params.values, **parse_overrides(["learning_rate=0.9"])},
                  secret_keys=params.secret_keys)

    resolved = resolve("train", Train, [layer])

    assert resolved.values["learning_rate"] == 0.9
    assert resolved.resources.driver_memory_mb == 4096
    assert "t0k" not in resolved.explain()


def error_for(path, task=None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_params_file(path, task=task)
    return caught.value.detail


def test_missing_file(tmp_path):
    assert error_for(tmp_path / "nope.json") == f"Params file {str(tmp_path / 'nope.json')!r} does not exist"


def test_a_directory_is_not_a_file(tmp_path):
    (tmp_path / "d.json").mkdir()
    assert "is a directory" in error_for(tmp_path / "d.json")


def test_unsupported_extension(tmp_path):
    assert "unsupported extension '.toml': use .json, .yaml or .yml" in error_for(
        write(tmp_path, "p.toml", "a = 1"))


def test_json_parse_error_gives_the_line(tmp_path):
    detail = error_for(write(tmp_path, "p.json", '{\n  "a": 1,\n  "b": \n}'))

    assert "is not valid JSON" in detail
    assert "line 4" in detail


def test_yaml_parse_error_gives_the_line(tmp_path):
    detail = error_for(write(tmp_path, "p.yaml", "a: 1\nb: [1, 2\nc: 3\n"))

    assert "is not valid YAML" in detail
    assert "line 3" in detail


@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("42", "is a single int value"),
    ("a:\n  b: 1\n", "parameter 'a' has a nested dict"),
    ("a:\n", "parameter 'a' has no value"),
    ("a: [[1]]\n", "parameter 'a' has a nested list"),
    ("1: x\n", "key 1 is not a parameter name"),
])
def test_wrong_shapes(tmp_path, text, message):
    assert message in error_for(write(tmp_path, "p.yaml", text))


def test_a_task_list_needs_a_task(tmp_path):
    path = write(tmp_path, "t.json", json.dumps(TASKS))

    assert "holds a task list: say which task" in error_for(path)


def test_a_task_list_without_the_task(tmp_path):
    path = write(tmp_path, "t.json", json.dumps(TASKS))

    assert "has no task 'score' (it has 'train', 'fp')" in error_for(path, task="score")


@pytest.mark.parametrize("tasks, message", [
    ([{"parameters": []}], "tasks[0] is not a task object with a 'name'"),
    ([{"name": "train", "parameters": [{"value": "1"}]}], "parameters[0] of task 'train' has no 'key'"),
    ([{"name": "train", "parameters": {"a": "1"}}], "'parameters' of task 'train' must be a list"),
    ([{"name": "fp"}, {"name": "featurePipeline"}], "lists task 'featurePipeline' more than once"),
])
def test_malformed_task_lists(tmp_path, tasks, message):
    path = write(tmp_path, "t.json", json.dumps(tasks))

    assert message in error_for(path, task="train" if "train" in message else "fp")
