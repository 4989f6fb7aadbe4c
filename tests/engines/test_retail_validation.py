"""retail-sales' per-epoch validation curve: on a fixed sample of the validation rows when there
are more than `validation_sample_rows` (the same rows every epoch and whatever the chunking), on
every row otherwise; the run's final metrics always use every row; the choice is in the log."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from engines.retail_sales import RetailSalesEngine, generate_retail
from runtime.engine import default_context

# 5 stores, 100 weeks from 2010-02-05; validation from 2011-07-08: 125 rows.
FAST = {"epochs": "3", "n_estimators": "2", "hidden_size": "8", "train_start": "2010-02-12",
        "train_end": "2011-07-01", "validation_start": "2011-07-08"}


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    engine = RetailSalesEngine()
    return engine.feature_pipeline(default_context(engine, "featurePipeline", {}),
                                   generate_retail(seed=5, stores=5, weeks=100))


def _validation(frames, sample_rows, tmp_path):
    import torch

    from engines.retail_sales.params import TrainParams
    from engines.retail_sales.training_set import TrainingSet

    data = TrainingSet.gather(iter(frames), TrainParams(**FAST), tmp_path, validation=True)
    try:
        return data.epoch_validation(["MAPE"], torch.device("cpu"), sample_rows, seed=7)
    finally:
        data.close()
        data.discard_history()


def test_the_sample_is_the_same_rows_whatever_the_chunking(features, tmp_path):
    every = _validation([features], 0, tmp_path)
    assert every.rows == every.total_rows > 100
    whole = _validation([features], 40, tmp_path)
    by_store = [part for _, part in features.groupby("store", sort=True)]
    chunked = _validation(by_store, 40, tmp_path)
    assert whole.rows == 40 and whole.total_rows == every.total_rows
    from engines.retail_sales.training_set import sample_positions

    picked = sample_positions(every.total_rows, 40, 7)
    for sample in (whole, chunked):   # those rows of the whole validation set, in its order
        np.testing.assert_array_equal(sample.x.numpy(), every.x.numpy()[picked])
        np.testing.assert_array_equal(sample.current, every.current[picked])
        np.testing.assert_array_equal(sample.actual, every.actual[picked])
    assert _validation([features], every.total_rows, tmp_path).rows == every.total_rows


def test_the_curve_uses_the_sample_and_evaluate_every_row(features, caplog):
    engine = RetailSalesEngine()
    curves: dict[str, list] = {}
    for sample_rows in ("50", "0"):
        points: list = []
        ctx = default_context(engine, "train", {**FAST, "validation_sample_rows": sample_rows},
                              log_metric=lambda name, value, step=None, valueType=None:
                              points.append((name, step, value)))
        with caplog.at_level(logging.INFO):
            model = engine.train(ctx, features)
        final = {m.name: m.value for m in engine.evaluate(ctx, model, features)}
        curves[sample_rows] = [(s, v) for n, s, v in points if n == "MAPE" and s is not None]
        assert [s for s, _ in curves[sample_rows]] == [1, 2, 3]
        if sample_rows == "0":   # the curve on every row ends where evaluate does
            assert curves[sample_rows][-1][1] == pytest.approx(final["MAPE"], rel=1e-4)
    assert "per-epoch validation on 50 of the 125 validation rows (a fixed sample drawn with seed 0)" in caplog.text
    assert "per-epoch validation on all of the 125 validation rows," in caplog.text
    # Same training either way (the curve only reads the network): the sample's points differ
    # from the whole set's by sampling, not by a different model.
    assert [v for _, v in curves["50"]] != [v for _, v in curves["0"]]
    assert [v for _, v in curves["50"]] == pytest.approx([v for _, v in curves["0"]], rel=0.5)


def test_explain_says_the_curve_uses_a_sample():
    engine = RetailSalesEngine()
    raw = generate_retail(seed=5, stores=5, weeks=100)
    sampled = engine.explain(default_context(engine, "train", {**FAST, "validation_sample_rows": "50"}), raw)
    assert ("per-epoch validation curve: a fixed sample of 50 of those rows (validation_sample_rows; "
            "0: all of them); the final metrics use all 125") in sampled
    every = engine.explain(default_context(engine, "train", FAST), raw)   # 4,096 > 125 rows
    assert not any(line.startswith("per-epoch validation curve") for line in every)
