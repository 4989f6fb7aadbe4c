"""The retail-sales model: training, safe save/load, scoring with stored history, evaluation."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from engines.retail_sales import RetailSalesEngine, generate_retail
from runtime.engine import default_context
from runtime.errors import ConfigError

# Small and quick: 6 stores, 90 weeks (2010-02-05 .. 2011-10-14); year-ago features from week 60.
FAST = {"epochs": "8", "n_estimators": "2", "hidden_size": "16", "train_start": "2010-02-12",
        "train_end": "2011-07-01", "validation_start": "2011-07-08"}


@pytest.fixture(scope="module")
def data() -> pd.DataFrame:
    return generate_retail(seed=11, stores=6, weeks=90)


@pytest.fixture(scope="module")
def trained(data):
    engine = RetailSalesEngine()
    ctx = default_context(engine, "train", FAST)
    features = engine.feature_pipeline(ctx, data)
    return engine, ctx, features, engine.train(ctx, features)


def test_train_logs_loss_and_reports_progress(data):
    engine, seen, ticks = RetailSalesEngine(), {}, []

    class Bar:   # the epochs' bar is the one checked (a second one counts batches)
        def __init__(self, total, desc):
            self.desc = desc
            if desc == "epochs":
                ticks.append(("open", total))

        def update(self, n=1):
            if self.desc == "epochs":
                ticks.append(("tick", n))

        def close(self):
            if self.desc == "epochs":
                ticks.append(("close", 0))

    ctx = default_context(engine, "train", FAST, log_metric=lambda n, v, t="double": seen.update({n: v}),
                          progress=Bar)
    engine.train(ctx, engine.feature_pipeline(ctx, data))
    assert "trainingLoss" in seen and np.isfinite(seen["trainingLoss"])
    assert ticks[0] == ("open", 8) and ticks.count(("tick", 1)) == 8 and ticks[-1] == ("close", 0)


def test_save_load_round_trip_gives_identical_predictions(trained, tmp_path):
    import torch

    engine, ctx, features, model = trained
    engine.save_model(ctx, model, tmp_path / "model")
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["history.parquet", "model.json", "model.pt"]
    # safe formats: tensors only (weights_only), JSON metadata, Parquet table
    state = torch.load(tmp_path / "model" / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["target"] == "weeklySales" and meta["hyperparameters"]["n_estimators"] == 2

    score_ctx = default_context(engine, "score", {})
    loaded = engine.load_model(score_ctx, tmp_path / "model")
    before = engine.score(score_ctx, model, features)
    after = engine.score(score_ctx, loaded, features)
    assert list(after.columns) == ["date", "store", "prediction"]
    assert len(after) == len(features) and after["prediction"].notna().all()
    np.testing.assert_array_equal(before["prediction"].to_numpy(), after["prediction"].to_numpy())


def test_score_and_evaluate_take_raw_rows_or_features_alike(trained, data):
    engine, ctx, features, model = trained
    assert engine.score_input == "raw"
    pd.testing.assert_frame_equal(engine.score(ctx, model, data), engine.score(ctx, model, features))
    assert engine.evaluate(ctx, model, data) == engine.evaluate(ctx, model, features)


def test_load_refuses_a_directory_without_a_model(tmp_path):
    engine = RetailSalesEngine()
    with pytest.raises(ConfigError, match="model.json"):
        engine.load_model(default_context(engine, "score", {}), tmp_path)


def test_training_is_deterministic_per_seed(data):
    engine = RetailSalesEngine()

    def predictions(seed):
        ctx = default_context(engine, "train", {**FAST, "seed": seed})
        features = engine.feature_pipeline(ctx, data)
        return engine.score(ctx, engine.train(ctx, features), features)["prediction"].to_numpy()

    np.testing.assert_array_equal(predictions(1), predictions(1))
    assert not np.array_equal(predictions(1), predictions(2))


def test_scoring_new_weeks_uses_the_stored_history(trained, data):
    """Scoring only the last weeks (no year-ago rows in the data) equals scoring them with all rows."""
    engine, ctx, features, model = trained
    recent = data[data["date"] >= pd.Timestamp("2011-08-05")]
    only_recent = engine.score(ctx, model, recent)
    within_all = engine.score(ctx, model, data)
    within_all = within_all[within_all["date"] >= pd.Timestamp("2011-08-05")].reset_index(drop=True)
    pd.testing.assert_frame_equal(only_recent, within_all)

    # without history those rows lose their year-ago features and the forecast changes
    model_without = type(model)(net=model.net, meta=model.meta, history=model.history.iloc[0:0])
    blind = engine.score(ctx, model_without, recent)
    assert not np.allclose(blind["prediction"], only_recent["prediction"])


def test_predictions_are_keyed_by_store_and_date_not_row_order(trained, data):
    engine, ctx, features, model = trained
    straight = engine.score(ctx, model, data)
    shuffled = engine.score(ctx, model, data.sample(frac=1.0, random_state=5))
    pd.testing.assert_frame_equal(straight, shuffled)
    scored = straight.merge(features, on=["date", "store"])
    rows = scored["weeklySalesAhead"].notna()
    error = np.log(scored.loc[rows, "prediction"] / scored.loc[rows, "weeklySalesAhead"]).abs()
    assert error.median() < 0.05  # a forecast of the following week's sales, in its units


def test_evaluate_reports_the_configured_metrics(trained, caplog):
    engine, ctx, features, model = trained
    metrics = engine.evaluate(ctx, model, features)
    values = {m.name: m.value for m in metrics}
    assert list(values) == ["MAPE", "MAE", "RMSE", "MASE"]
    assert all(m.valueType == "double" for m in metrics)
    assert 0 < values["MAPE"] < 0.2 and values["RMSE"] >= values["MAE"] > 0
    assert values["MASE"] == pytest.approx(values["MAE"] / model.meta["naive_scale"])

    only = default_context(engine, "train", {**FAST, "evaluation.metrics": "RMSE"})
    assert [m.name for m in engine.evaluate(only, model, features)] == ["RMSE"]
    # No validation rows: no metrics, and a warning that says why (the Model is still good)
    late = default_context(engine, "train", {**FAST, "validation_start": "2030-01-01"})
    with caplog.at_level("WARNING", logger="runtime.engine"):
        assert engine.evaluate(late, model, features) == []
    assert any("No validation metrics: no row from validation_start 2030-01-01" in r.getMessage()
               for r in caplog.records)


def test_training_window_without_rows_is_a_config_error(data):
    engine = RetailSalesEngine()
    ctx = default_context(engine, "train", {**FAST, "train_end": "2010-06-01"})
    with pytest.raises(ConfigError, match="No training rows"):
        engine.train(ctx, engine.feature_pipeline(ctx, data))


def test_custom_input_features(data):
    engine = RetailSalesEngine()
    ctx = default_context(engine, "train", {**FAST, "ACP_DSW_INPUT_FEATURES": "storeType,isHoliday,temperature,lag1Ratio"})
    model = engine.train(ctx, engine.feature_pipeline(ctx, data))
    assert model.inputs == ["storeType_A", "storeType_B", "storeType_C", "holiday", "temperature", "lag1Ratio"]


@pytest.mark.skipif("__import__('torch').cuda.is_available()",
                    reason="a CUDA device is present: this test checks the refusal without one")
def test_cuda_request_without_cuda_is_a_config_error(trained):
    engine, _, features, model = trained
    ctx = default_context(engine, "score", {}, device="cuda")
    with pytest.raises(ConfigError, match="CUDA"):
        engine.score(ctx, model, features)


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_inference_path_equals_the_mean_of_the_members(depth):
    # predict_log_ratio runs a fused form of the network (first layers side by side, last
    # layers and skips folded into the mean); it must compute what forward() does.
    import torch

    from engines.retail_sales.model import BaggedMLP

    torch.manual_seed(depth)
    net = BaggedMLP(n_inputs=5, hidden_size=16, depth=depth, members=4)
    with torch.no_grad():
        net.skip.normal_()
    x = torch.randn(300, 5)
    with torch.inference_mode():
        expected = net(x).mean(0)
        fused = net.mean_predictor()(x)
    torch.testing.assert_close(fused, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("depth", [1, 3])
def test_inference_batches_reuse_buffers_to_the_same_predictions(depth):
    # The mean predictor writes each batch's activations into buffers made on its first call:
    # batches of any size, larger or smaller than before, in and out of inference mode, give
    # what a call on every row at once gives, bit for bit.
    import torch

    from engines.retail_sales.model import BaggedMLP

    torch.manual_seed(depth)
    net = BaggedMLP(n_inputs=5, hidden_size=16, depth=depth, members=4)
    x = torch.randn(1000, 5)
    with torch.inference_mode():
        whole = net.mean_predictor()(x)
        predict = net.mean_predictor()
        for batch in (128, 300, 1000, 7):
            parts = torch.cat([predict(x[i:i + batch]) for i in range(0, len(x), batch)])
            assert torch.equal(parts, whole)
    assert torch.equal(predict(x[:64]), whole[:64])


def test_an_unset_cpu_score_batch_is_sized_from_the_model_and_the_cache(trained):
    from engines.retail_sales.model import cpu_batch_rows

    engine, _, _, model = trained
    hp = model.meta["hyperparameters"]
    for threads in (1, 2):
        rows = engine._batch_size(default_context(engine, "score", {}, threads=threads), model)
        assert rows == cpu_batch_rows(hp["n_estimators"], hp["hidden_size"], threads)
        assert 256 <= rows <= 16384 and rows & (rows - 1) == 0
    assert engine._batch_size(default_context(engine, "score", {"batch_size": 300}), model) == 300


def test_history_rows_fill_the_weeks_a_scoring_file_lacks(trained, data):
    # Later weeks only, shuffled: year-ago features come from the stored history, so each row
    # gets the prediction it gets when scored with the whole data; without the isHoliday column
    # the model was trained with, the missing flags read as not-a-holiday instead of failing.
    engine, _, _, model = trained
    later = data[data["date"] >= data["date"].unique()[-20]].sample(frac=1.0, random_state=1)
    ctx = default_context(engine, "score", {})
    whole = engine.score(ctx, model, data).set_index(["store", "date"])["prediction"]
    alone = engine.score(ctx, model, later).set_index(["store", "date"])["prediction"]
    assert len(alone) == len(later)
    np.testing.assert_allclose(alone.to_numpy(), whole.loc[alone.index].to_numpy(), rtol=1e-6)
    without_flags = engine.score(ctx, model, later.drop(columns=["isHoliday"]))
    assert np.isfinite(without_flags["prediction"]).all()
