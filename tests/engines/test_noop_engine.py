"""The noop engine: every stage runs and does next to nothing."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from runtime.engine import default_context, load_engine
from runtime.errors import ConfigError


def test_noop_stages(tmp_path):
    engine_cls = load_engine("noop")
    engine = engine_cls()
    seen = {}
    ctx = default_context(engine_cls, "train", {"echo": "hello"},
                          log_metric=lambda name, value, valueType="double": seen.update({name: value}))
    frame = pd.DataFrame({"a": [1, 2, 3]})
    features = engine.feature_pipeline(ctx, frame)
    assert features is frame
    model = engine.train(ctx, features)
    assert seen == {"rows": 3.0}
    engine.save_model(ctx, model, tmp_path / "m")
    assert json.loads((tmp_path / "m" / "model.json").read_text()) == {"echo": "hello", "rows": 3}
    loaded = engine.load_model(ctx, tmp_path / "m")
    assert loaded == model
    assert engine.score(ctx, loaded, frame) is frame
    assert [m.model_dump() for m in engine.evaluate(ctx, loaded, frame)] == \
        [{"name": "rows", "value": 3.0, "valueType": "double"}]


def test_noop_params_are_typed():
    engine_cls = load_engine("noop")
    assert default_context(engine_cls, "score", {"sleep_ms": "5"}).params.sleep_ms == 5
    with pytest.raises(ConfigError):
        default_context(engine_cls, "score", {"sleep_ms": "-1"})
    with pytest.raises(ConfigError):
        default_context(engine_cls, "score", {"unknown": "x"})
