"""The engine contract and loader: entry points, import paths, errors, cheap import, parameters."""
from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from pydantic import BaseModel

from runtime.engine import (Engine, Metric, NullProgress, TaskContext, TextProgress, default_context,
                            installed_engines, load_engine, parse_params, read_table)
from runtime.errors import ConfigError, EngineNotFound

REPO = Path(__file__).resolve().parents[2]


def test_builtins_are_entry_points():
    engines = installed_engines()
    # Needs `pip install -e . --no-deps`: built-ins are found only through entry points.
    assert {"retail-sales", "noop"} <= set(engines)
    assert engines["retail-sales"].value == "engines.retail_sales:RetailSalesEngine"


def test_load_by_entry_point_name():
    from engines.noop import NoopEngine
    from engines.retail_sales import RetailSalesEngine

    assert load_engine("retail-sales") is RetailSalesEngine
    assert load_engine("noop") is NoopEngine
    assert RetailSalesEngine.kind == "python" and RetailSalesEngine.name == "retail-sales"
    assert set(RetailSalesEngine.params) == {"train", "score", "featurePipeline"}


def test_load_by_import_path():
    from engines.noop import NoopEngine

    assert load_engine("engines.noop:NoopEngine") is NoopEngine


def test_unknown_name_lists_installed_engines():
    with pytest.raises(EngineNotFound) as info:
        load_engine("no-such-engine")
    message = str(info.value)
    assert "no-such-engine" in message
    assert "retail-sales" in message and "noop" in message
    assert info.value.status == 400


@pytest.mark.parametrize("path", ["engines.nothing_here:Engine", "engines.noop:Missing",
                                  "engines.noop:_pause", "runtime.errors:ConfigError"])
def test_bad_import_paths_raise_engine_not_found(path):
    with pytest.raises(EngineNotFound):
        load_engine(path)


@pytest.mark.parametrize("module", ["runtime.engine", "engines", "engines.noop", "engines.retail_sales"])
def test_import_does_not_import_heavy_libraries(module):
    code = textwrap.dedent(f"""
        import sys, {module}
        heavy = sorted(m for m in ("torch", "pyspark", "ray") if m in sys.modules)
        print(",".join(heavy))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("name", ["retail-sales", "noop"])
def test_loading_an_engine_class_imports_no_data_libraries(name):
    # `run train` loads the class in the CLI process to read its kind and parameter schemas,
    # before the worker (which does import them) starts: numpy/pandas/torch there are pure cost.
    code = textwrap.dedent(f"""
        import sys
        from runtime.engine import load_engine, parse_params
        engine = load_engine({name!r})
        for task in engine.params:
            parse_params(engine, task, {{}})
        print(",".join(sorted(m for m in ("numpy", "pandas", "torch", "pyarrow") if m in sys.modules)))
    """)
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_load_engine_does_not_import_torch():
    code = "import sys; from runtime.engine import load_engine; load_engine('retail-sales'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_parse_params_types_strings_and_dotted_aliases():
    engine = load_engine("retail-sales")
    params = parse_params(engine, "train", {"learning_rate": "0.05", "n_estimators": "3",
                                            "evaluation.metrics": "mape,mae", "train_end": "2011-12-30"})
    assert params.learning_rate == 0.05 and params.n_estimators == 3
    assert params.metric_names() == ["MAPE", "MAE"]
    assert str(params.train_end) == "2011-12-30"
    # populate_by_name: python code may use the field name of an aliased key
    assert parse_params(engine, "train", {"label_column": "x"}).label_column == "x"
    assert parse_params(engine, "fp", {}).target == "weeklySales"


@pytest.mark.parametrize("values", [{"no_such_key": "1"}, {"learning_rate": "fast"},
                                    {"evaluation.metrics": "R2"}, {"ACP_DSW_TARGET_FEATURES": "a,b"}])
def test_parse_params_refuses_bad_keys_and_values(values):
    with pytest.raises(ConfigError) as info:
        parse_params(load_engine("retail-sales"), "train", values)
    assert "retail-sales" in str(info.value)


def test_accepts_extra_keys_keeps_unknown_keys():
    class Params(BaseModel):
        a: int = 1

    class Open(Engine):
        name, kind, params, accepts_extra_keys = "open", "python", {"train": Params}, True

    parsed = parse_params(Open, "train", {"a": "2", "free": "x"})
    assert parsed.a == 2 and parsed.model_extra == {"free": "x"}


def test_default_context_and_task_names(tmp_path):
    engine = load_engine("noop")
    ctx = default_context(engine, "fp", {"echo": "hi"}, artifact_dir=tmp_path, threads=2)
    assert ctx.task == "featurePipeline" and ctx.params.echo == "hi" and ctx.threads == 2
    assert ctx.spark is None and ctx.device == "cpu" and ctx.artifact_dir == tmp_path
    ctx.log_metric("x", 1.0)  # the default collects nothing but must be callable
    bar = ctx.progress(3, "work")
    bar.update()
    bar.close()
    with pytest.raises(ConfigError):
        TaskContext(task="fly", params=ctx.params)


def test_text_progress_logs(caplog):
    with caplog.at_level(logging.INFO):
        bar = TextProgress(20, "epochs", logger=logging.getLogger("t"))
        for _ in range(20):
            bar.update()
        bar.close()
    assert "epochs: 20/20" in caplog.text
    assert NullProgress(5).total == 5


def test_metric_serialises_as_insight_metric():
    assert Metric(name="MAPE", value=0.1, valueType="double").model_dump() == \
        {"name": "MAPE", "value": 0.1, "valueType": "double"}


def test_read_table_by_extension_and_uri(tmp_path):
    frame = pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    frame.to_parquet(tmp_path / "t.parquet", index=False)
    pd.testing.assert_frame_equal(read_table(tmp_path / "t.csv"), frame)
    pd.testing.assert_frame_equal(read_table(f"file://{tmp_path / 't.parquet'}"), frame)
    with pytest.raises(ConfigError):
        read_table(tmp_path / "missing.csv")
    (tmp_path / "t.txt").write_text("a")
    with pytest.raises(ConfigError):
        read_table(tmp_path / "t.txt")
    with pytest.raises(ConfigError):
        read_table("s3://bucket/t.csv")
