"""The API's string values become the schema's types; a bad value names key, value, type and layer."""
from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, Field

from runtime.errors import ConfigError
from runtime.resolver import CLI, MLINSTANCE, RUN, Layer, resolve


class Params(BaseModel):
    rate: float = 0.1
    count: int = 1
    flag: bool = True
    name: str = "x"
    sizes: list[int] = Field(default_factory=list)
    tags: list[str] | None = None
    mode: Literal["fast", "exact"] = "fast"
    limits: dict[str, int] = Field(default_factory=dict)


def one(key, value, layer=MLINSTANCE, secret=False):
    return [Layer(layer, tasks=[{"name": "train",
                                 "parameters": [{"key": key, "value": value, "secret": secret}]}])]


def value_of(key, value):
    return resolve("train", Params, one(key, value)).values[key]


@pytest.mark.parametrize("text, expected", [("0.3", 0.3), ("1e-3", 0.001), ("10", 10.0),
                                            ("-2.5", -2.5)])
def test_float_strings(text, expected):
    result = value_of("rate", text)
    assert result == expected and isinstance(result, float)


@pytest.mark.parametrize("text", ["false", "False", "FALSE", "0", "no", "No", "off"])
def test_false_strings_are_false_never_truthy(text):
    assert value_of("flag", text) is False


@pytest.mark.parametrize("text", ["true", "True", "1", "yes", "on"])
def test_true_strings_are_true(text):
    resolved = resolve("train", Params, [Layer(RUN, overrides={"flag": "false"})] + one("flag", text))
    assert resolved.values["flag"] is True


def test_int_string():
    result = value_of("count", "10")
    assert result == 10 and isinstance(result, int)


def test_str_field_keeps_the_string_even_if_it_looks_like_a_number():
    assert value_of("name", "007") == "007"


def test_comma_list_for_a_list_field():
    assert value_of("sizes", "1, 2,3") == [1, 2, 3]
    assert value_of("tags", "a,b") == ["a", "b"]


def test_json_list_and_empty_string_for_a_list_field():
    assert value_of("sizes", "[4, 5]") == [4, 5]
    assert value_of("sizes", "") == []


def test_json_object_for_a_dict_field():
    assert value_of("limits", '{"a": 1}') == {"a": 1}


def test_literal_field():
    assert value_of("mode", "exact") == "exact"


def test_numbers_and_bools_from_files_and_cli_type_like_strings():
    overrides = {"rate": 1, "count": 3, "flag": False, "name": 12, "sizes": [1, "2"],
                 "tags": ["p", "q"]}
    resolved = resolve("train", Params, [Layer(CLI, overrides=overrides)])

    assert resolved.values["rate"] == 1.0
    assert resolved.values["count"] == 3
    assert resolved.values["flag"] is False
    assert resolved.values["name"] == "12"
    assert resolved.values["sizes"] == [1, 2]
    assert resolved.values["tags"] == ["p", "q"]


def test_a_false_bool_from_a_file_is_false():
    assert resolve("train", Params, [Layer(CLI, overrides={"flag": False})]).params.flag is False


def error_for(layers, schema=Params) -> str:
    with pytest.raises(ConfigError) as caught:
        resolve("train", schema, layers)
    return caught.value.detail


def test_fractional_int_is_an_error_naming_key_value_type_and_layer():
    detail = error_for(one("count", "10.5", layer=RUN))

    assert "'count'" in detail
    assert "'10.5'" in detail
    assert "int" in detail
    assert "'run'" in detail
    assert "train" in detail


def test_bad_bool_is_an_error_not_truthy():
    detail = error_for(one("flag", "nope"))

    assert "'flag' = 'nope' from layer 'mlInstance' is not a valid bool" in detail


def test_bad_float_names_the_layer_that_set_the_winning_value():
    layers = one("rate", "0.2", layer=MLINSTANCE) + [Layer(CLI, overrides={"rate": "fast"})]

    detail = error_for(layers)

    assert "'rate' = 'fast' from layer 'cli' is not a valid float" in detail


def test_a_bad_value_hidden_by_a_later_layer_is_not_an_error():
    layers = one("rate", "abc") + [Layer(CLI, overrides={"rate": "0.5"})]

    assert resolve("train", Params, layers).values["rate"] == 0.5


def test_bad_list_item_names_the_item():
    detail = error_for(one("sizes", "1,x,3"))

    assert "'sizes' = '1,x,3' from layer 'mlInstance' is not a valid list[int]" in detail
    assert "sizes[1]" in detail


def test_bad_literal_lists_the_choices():
    detail = error_for(one("mode", "slow"))

    assert "'mode' = 'slow'" in detail
    assert "Literal['fast', 'exact']" in detail


def test_every_bad_value_is_reported_at_once():
    layers = [Layer(RUN, overrides={"rate": "a", "count": "b"})]

    with pytest.raises(ConfigError) as caught:
        resolve("train", Params, layers)

    assert "2 problems" in caught.value.detail
    assert len(caught.value.extra["problems"]) == 2
    assert caught.value.extra["task"] == "train"


def test_a_required_field_no_layer_sets_is_an_error():
    class Needs(BaseModel):
        dataset_id: str

    detail = error_for([Layer(RUN)], schema=Needs)

    assert "required parameter 'dataset_id' (str) is not set by any layer" in detail


def test_a_bad_secret_value_is_masked_in_the_error():
    class Secretive(BaseModel):
        pin: int = 0

    detail = error_for(one("pin", "hunter2", secret=True), schema=Secretive)

    assert "hunter2" not in detail
    assert "'pin' = ******** from layer 'mlInstance'" in detail


def test_config_error_is_a_bad_request():
    with pytest.raises(ConfigError) as caught:
        resolve("train", Params, one("count", "x"))

    assert caught.value.status == 400
    assert caught.value.to_body()["title"] == "Invalid Configuration"
