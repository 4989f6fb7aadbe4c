"""The sweep grammar and the trial plan (pure)."""
from __future__ import annotations

import pytest

from runtime.errors import ConfigError
from runtime.sweep import (load_sweep_file, metric_of, parse_param, plan_trials, sorted_rows,
                           table_text)


def test_lists_ranges_and_choices_make_a_grid_first_parameter_slowest():
    axes = [parse_param("learning_rate=0.001,0.003"), parse_param("hidden_size=range(32,129,32)"),
            parse_param("n_estimators=choice(4, 8)"), parse_param("epochs=5")]
    trials = plan_trials(axes)
    assert len(trials) == 2 * 4 * 2
    assert trials[0] == {"learning_rate": "0.001", "hidden_size": "32", "n_estimators": "4",
                         "epochs": "5"}
    assert trials[-1] == {"learning_rate": "0.003", "hidden_size": "128", "n_estimators": "8",
                          "epochs": "5"}
    assert [t["hidden_size"] for t in trials[:8:2]] == ["32", "64", "96", "128"]


def test_range_forms():
    assert parse_param("a=range(3)").values == ("0", "1", "2")
    assert parse_param("a=range(5,0,-2)").values == ("5", "3", "1")
    assert parse_param("a=range(0,1,0.25)").values == ("0", "0.25", "0.5", "0.75")
    for bad, why in (("a=range(1,1)", "empty"), ("a=range(1,5,0)", "step"),
                     ("a=range(x,5)", "not a number"), ("a=range()", "range takes")):
        with pytest.raises(ConfigError, match=why):
            parse_param(bad)


def test_quotes_keep_commas_and_bad_input_names_the_parameter():
    assert parse_param('input_features="a,b"').values == ("a,b",)
    assert parse_param("cols=choice('a,b', c)").values == ("a,b", "c")
    for bad, why in (("=1,2", "KEY=VALUE"), ("noequals", "KEY=VALUE"), ("a=1,,2", "empty value"),
                     ("a=normal(0,1)", "unknown sweep function 'normal'"),
                     ("a=loguniform(0,1)", "low > 0"), ("a=uniform(2,1)", "low < high"),
                     ("a=randint(1.5,3)", "whole numbers"), ("a='x", "unclosed quote"),
                     ("bad key=1", "not a parameter name")):
        with pytest.raises(ConfigError, match=why):
            parse_param(bad)


def test_random_sampling_is_seeded_and_stays_in_bounds():
    axes = [parse_param("lr=uniform(0.001,0.1)"), parse_param("wd=loguniform(1e-6,1e-3)"),
            parse_param("depth=randint(1,4)"), parse_param("h=range(32,129,32)")]
    one = plan_trials(axes, samples=50, seed=7)
    assert one == plan_trials(axes, samples=50, seed=7) != plan_trials(axes, samples=50, seed=8)
    assert len(one) == 50
    for t in one:
        assert 0.001 <= float(t["lr"]) <= 0.1 and 1e-6 <= float(t["wd"]) <= 1e-3
        assert t["depth"] in {"1", "2", "3"} and t["h"] in {"32", "64", "96", "128"}
    assert {t["depth"] for t in one} == {"1", "2", "3"}
    # log-uniform: about as many draws below 3.2e-5 (the log midpoint) as above
    low = sum(float(t["wd"]) < 10 ** -4.5 for t in plan_trials(axes, samples=400, seed=1))
    assert 140 < low < 260


def test_plan_errors():
    with pytest.raises(ConfigError, match="distribution: sample it with --samples"):
        plan_trials([parse_param("wd=loguniform(1e-6,1e-3)")])
    with pytest.raises(ConfigError, match="given twice"):
        plan_trials([parse_param("a=1,2"), parse_param("a=3")])
    with pytest.raises(ConfigError, match="--seed only applies"):
        plan_trials([parse_param("a=1,2")], seed=3)
    with pytest.raises(ConfigError, match="over 10000"):
        plan_trials([parse_param(f"p{i}=range(10)") for i in range(5)])
    with pytest.raises(ConfigError, match="at least one parameter"):
        plan_trials([])
    with pytest.raises(ConfigError, match="at least 1"):
        plan_trials([parse_param("a=1,2")], samples=0)


def test_sweep_file(tmp_path):
    path = tmp_path / "sweep.yaml"
    path.write_text("params:\n  learning_rate: [0.001, 0.003]\n  hidden_size: range(32,65,32)\n"
                    "  weight_decay: loguniform(1e-6,1e-3)\n  epochs: 2\n  shuffle: true\n"
                    "samples: 4\nseed: 3\nmetric: MAPE\nmode: min\nparallel: 2\n")
    config = load_sweep_file(path)
    assert (config.samples, config.seed, config.metric, config.mode, config.parallel) == (
        4, 3, "MAPE", "min", 2)
    trials = plan_trials(config.axes, samples=config.samples, seed=config.seed)
    assert len(trials) == 4 and all(t["epochs"] == "2" and t["shuffle"] == "true" for t in trials)
    path.write_text("params:\n  a: {b: 1}\n")
    with pytest.raises(ConfigError, match="must be a value"):
        load_sweep_file(path)
    path.write_text("params: {a: [1]}\nsampels: 3\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_sweep_file(path)
    path.write_text("params: [\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_sweep_file(path)
    with pytest.raises(ConfigError, match="cannot read"):
        load_sweep_file(tmp_path / "missing.yaml")


def test_results_sort_by_metric_and_keep_failures_last():
    rows = [{"trial": 0, "params": {"a": "1"}, "metric": 0.5, "state": "DONE"},
            {"trial": 1, "params": {"a": "2"}, "metric": None, "state": "FAILED"},
            {"trial": 2, "params": {"a": "3"}, "metric": 0.1, "state": "DONE"}]
    assert [r["trial"] for r in sorted_rows(rows, "min")] == [2, 0, 1]
    assert [r["trial"] for r in sorted_rows(rows, "max")] == [0, 2, 1]
    text = table_text(sorted_rows(rows, "min"), ["a"], "MAPE")
    assert text.splitlines()[0].split() == ["trial", "a", "MAPE", "duration_s", "state", "run"]
    assert metric_of([{"name": "MAPE", "value": 0.25}], "mape") == 0.25
    assert metric_of([{"name": "MAE", "value": 1}], "MAPE") is None
