"""What a resolved config shows: explain() for people, to_record() for the run's stored record."""
from __future__ import annotations

import json
import re

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from runtime.resolver import CLI, ENGINE, MASK, MLINSTANCE, RUN, Layer, resolve


class Params(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    learning_rate: float = 0.1
    early_stop: bool = True
    metrics: list[str] = Field(default_factory=lambda: ["rmse"], alias="evaluation.metrics")
    api_token: str = ""
    db_password: SecretStr | None = None


def layers():
    return [
        Layer(ENGINE, tasks=[{"name": "train", "parameters": [
            {"key": "learning_rate", "value": "0.2"}]}]),
        Layer(MLINSTANCE, tasks=[{
            "name": "train",
            "parameters": [{"key": "api_token", "value": "tok-123", "secret": True},
                           {"key": "spark.hadoop.fs.s3a.secret.key", "value": "s3-xyz",
                            "secret": True},
                           {"key": "driverMemory", "value": "2048"}],
            "specification": {"type": "SparkTaskSpec", "numExecutors": 4}}]),
        Layer(RUN, overrides={"early_stop": "false", "db_password": "pw-456"}),
        Layer(CLI, overrides={"spark.sql.shuffle.partitions": "64"}),
    ]


def test_secrets_resolve_normally():
    resolved = resolve("train", Params, layers())

    assert resolved.values["api_token"] == "tok-123"
    assert resolved.params.db_password.get_secret_value() == "pw-456"
    assert resolved.resources.spark_conf["spark.hadoop.fs.s3a.secret.key"] == "s3-xyz"
    assert resolved.secret_keys == {"api_token", "db_password", "spark.hadoop.fs.s3a.secret.key"}


def test_explain_masks_every_secret():
    text = resolve("train", Params, layers()).explain()

    for secret in ("tok-123", "pw-456", "s3-xyz"):
        assert secret not in text
    assert text.count(MASK) == 3


def test_a_secret_stays_secret_when_a_later_layer_sets_it_without_the_flag():
    more = layers() + [Layer("late", overrides={"api_token": "tok-999"})]

    resolved = resolve("train", Params, more)

    assert resolved.values["api_token"] == "tok-999"
    assert "tok-999" not in resolved.explain()
    assert "tok-999" not in json.dumps(resolved.to_record())


def test_override_keys_can_be_marked_secret():
    resolved = resolve("train", Params, [Layer(CLI, overrides={"api_token": "t"},
                                               secret_keys=frozenset({"api_token"}))])

    assert resolved.to_record()["values"]["api_token"] == MASK


def rows(text):
    """explain() lines split into columns on runs of two or more spaces."""
    return {parts[0]: parts[1:] for parts in (re.split(r"\s{2,}", line.strip())
                                              for line in text.splitlines()) if len(parts) == 3}


def test_explain_lists_every_key_value_and_source_then_the_resources():
    text = resolve("train", Params, layers()).explain()
    table = rows(text)

    assert text.startswith("Configuration of task 'train'\n")
    assert table["learning_rate"] == ["0.2", ENGINE]
    assert table["early_stop"] == ["false", RUN]
    assert table["evaluation.metrics"] == ['["rmse"]', "default"]
    assert table["api_token"] == [MASK, MLINSTANCE]
    assert table["db_password"] == [MASK, RUN]
    assert table["driver_memory_mb"] == ["2048", MLINSTANCE]
    assert table["num_executors"] == ["4", MLINSTANCE]
    assert table["spark.sql.shuffle.partitions"] == ['"64"', CLI]
    assert "metrics" not in table  # the API's name, not the python field name
    lines = text.splitlines()
    assert lines.index(next(l for l in lines if l.startswith("resource"))) > \
        lines.index(next(l for l in lines if l.startswith("learning_rate")))


def test_explain_columns_line_up():
    text = resolve("train", Params, layers()).explain()
    lines = text.splitlines()
    header = next(l for l in lines if l.startswith("parameter"))
    value_at, source_at = header.index("value"), header.index("source")
    body = [l for l in lines[1:] if l and not l.startswith(("-", "("))]

    assert len(body) == 2 + 5 + 4  # two headers, five parameters, four resources
    for line in body:
        assert line[value_at - 2:value_at] == "  " and line[value_at] != " ", line
        assert line[source_at - 2:source_at] == "  " and line[source_at] != " ", line


def test_explain_says_when_nothing_is_requested():
    text = resolve("score", None, []).explain()

    assert "(no parameters)" in text
    assert "(none requested: the backend's defaults apply)" in text


def test_to_record_shape_is_json_and_masked():
    record = resolve("train", Params, layers()).to_record()

    assert json.loads(json.dumps(record)) == record
    assert record == {
        "task": "train",
        "values": {"learning_rate": 0.2, "early_stop": False, "evaluation.metrics": ["rmse"],
                   "api_token": MASK, "db_password": MASK},
        "provenance": {"learning_rate": ENGINE, "early_stop": RUN,
                       "evaluation.metrics": "default", "api_token": MLINSTANCE,
                       "db_password": RUN},
        "secret_keys": ["api_token", "db_password", "spark.hadoop.fs.s3a.secret.key"],
        "extra_keys": [],
        "resources": {"driver_memory_mb": 2048, "driver_cores": None,
                      "executor_memory_mb": None, "executor_cores": None, "num_executors": 4,
                      "cpus": None, "gpus": None, "system_metrics_interval_s": None,
                      "spark_conf": {"spark.hadoop.fs.s3a.secret.key": MASK,
                                     "spark.sql.shuffle.partitions": "64"}},
        "resource_provenance": {"driver_memory_mb": MLINSTANCE, "num_executors": MLINSTANCE,
                                "spark.hadoop.fs.s3a.secret.key": MLINSTANCE,
                                "spark.sql.shuffle.partitions": CLI},
    }


def test_to_record_of_non_json_types_is_json():
    import datetime
    import enum
    import pathlib

    class Kind(enum.Enum):
        A = "a"

    class Rich(BaseModel):
        when: datetime.date = datetime.date(2024, 1, 2)
        where: pathlib.Path = pathlib.Path("/tmp/x")
        kind: Kind = Kind.A

    record = resolve("train", Rich, [Layer(RUN, overrides={"kind": "a"})]).to_record()

    assert json.loads(json.dumps(record))["values"] == {"when": "2024-01-02", "where": "/tmp/x",
                                                        "kind": "a"}
