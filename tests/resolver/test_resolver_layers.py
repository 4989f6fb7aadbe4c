"""Layer precedence and provenance: later layers win, per key, for the one task asked for."""
from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from runtime.resolver import (CLI, DEFAULTS, ENGINE, EXPERIMENT, MLINSTANCE, RUN, Layer,
                              resolve)


class TrainParams(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    learning_rate: float = 0.1
    num_trees: int = 10
    max_depth: int = 3
    early_stop: bool = True
    seed: int = 0
    output_name: str = "model"
    metrics: list[str] = Field(default_factory=lambda: ["rmse"], alias="evaluation.metrics")


def task(name, **params):
    return {"name": name, "parameters": [{"key": k, "value": v} for k, v in params.items()]}


def six_layers():
    # Each layer sets one more key than the next, so each key's winner is a different layer.
    return [
        Layer(ENGINE, tasks=[task("train", learning_rate="0.2", num_trees="20", max_depth="4",
                                  early_stop="false", seed="5")]),
        Layer(MLINSTANCE, tasks=[task("train", learning_rate="0.3", num_trees="30",
                                      max_depth="5", early_stop="true")]),
        Layer(EXPERIMENT, tasks=[task("train", learning_rate="0.4", num_trees="40",
                                      max_depth="6")]),
        Layer(RUN, tasks=[task("train", learning_rate="0.5", num_trees="50")]),
        Layer(CLI, overrides={"learning_rate": "0.6"}),
    ]


def test_each_key_comes_from_the_last_layer_that_sets_it():
    resolved = resolve("train", TrainParams, six_layers())

    assert resolved.values == {
        "learning_rate": 0.6, "num_trees": 50, "max_depth": 6, "early_stop": True, "seed": 5,
        "output_name": "model", "evaluation.metrics": ["rmse"]}
    assert resolved.provenance == {
        "learning_rate": CLI, "num_trees": RUN, "max_depth": EXPERIMENT,
        "early_stop": MLINSTANCE, "seed": ENGINE, "output_name": DEFAULTS,
        "evaluation.metrics": DEFAULTS}


def test_params_is_the_typed_schema_instance():
    resolved = resolve("train", TrainParams, six_layers())

    assert isinstance(resolved.params, TrainParams)
    assert resolved.params.learning_rate == 0.6
    assert resolved.params.num_trees == 50
    assert resolved.task == "train"


def test_order_of_layers_not_their_names_decides():
    layers = [Layer(CLI, overrides={"num_trees": "7"}),
              Layer(ENGINE, tasks=[task("train", num_trees="8")])]

    resolved = resolve("train", TrainParams, layers)

    assert resolved.values["num_trees"] == 8
    assert resolved.provenance["num_trees"] == ENGINE


def test_overrides_apply_after_the_same_layers_tasks():
    layer = Layer(RUN, tasks=[task("train", num_trees="8")], overrides={"num_trees": 9})

    assert resolve("train", TrainParams, [layer]).values["num_trees"] == 9


def test_only_the_asked_tasks_entry_applies():
    layers = [Layer(MLINSTANCE, tasks=[task("score", num_trees="99"), task("train", seed="3"),
                                       task("fp", max_depth="77")])]

    resolved = resolve("train", TrainParams, layers)

    assert resolved.values["num_trees"] == 10
    assert resolved.values["max_depth"] == 3
    assert resolved.values["seed"] == 3


def test_fp_and_featurePipeline_are_one_task():
    layers = [Layer(ENGINE, tasks=[task("fp", num_trees="11")]),
              Layer(MLINSTANCE, tasks=[task("featurePipeline", max_depth="12")])]

    resolved = resolve("fp", TrainParams, layers)

    assert resolved.task == "featurePipeline"
    assert resolved.values["num_trees"] == 11
    assert resolved.values["max_depth"] == 12
    assert resolved.provenance["num_trees"] == ENGINE
    assert resolved.provenance["max_depth"] == MLINSTANCE


def test_empty_and_missing_layers_leave_the_defaults():
    layers = [Layer(ENGINE), Layer(MLINSTANCE, tasks=[]), Layer(EXPERIMENT, tasks=None),
              Layer(RUN, tasks=[{"name": "train"}]), Layer(CLI, overrides={}),
              Layer("partial", tasks=[{"name": "train", "parameters": None}])]

    resolved = resolve("train", TrainParams, layers)

    assert resolved.values["learning_rate"] == 0.1
    assert set(resolved.provenance.values()) == {DEFAULTS}


def test_no_layers_at_all():
    resolved = resolve("score", TrainParams, [])

    assert resolved.values["num_trees"] == 10
    assert resolved.resources.is_empty()


def test_dotted_alias_keys_are_accepted_under_either_name_and_reported_by_alias():
    layers = [Layer(MLINSTANCE, tasks=[task("train", **{"evaluation.metrics": "mae"})]),
              Layer(CLI, overrides={"metrics": "mae,rmse"})]

    resolved = resolve("train", TrainParams, layers)

    assert resolved.values["evaluation.metrics"] == ["mae", "rmse"]
    assert resolved.provenance["evaluation.metrics"] == CLI
    assert "metrics" not in resolved.values
    assert resolved.params.metrics == ["mae", "rmse"]


def test_later_parameter_in_one_list_wins():
    layers = [Layer(MLINSTANCE, tasks=[{"name": "train", "parameters": [
        {"key": "seed", "value": "1"}, {"key": "seed", "value": "2"}]}])]

    assert resolve("train", TrainParams, layers).values["seed"] == 2


def test_the_resolver_does_not_change_its_inputs():
    layers = six_layers()
    before = repr(layers)

    resolve("train", TrainParams, layers)

    assert repr(layers) == before
