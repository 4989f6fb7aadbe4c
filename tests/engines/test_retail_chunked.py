"""Chunked scoring of retail-sales: the same scores as the whole-file path, bit for bit, whatever
the chunk size, the file's row order or format; bad input fails before the target is touched."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from engines.retail_sales import RetailSalesEngine, generate_retail
from engines.retail_sales.chunked import ChunkedSource, StreamedScores
from runtime.datasets import resolve_dataset
from runtime.engine import default_context
from runtime.errors import ConfigError

RETAIL = Path(__file__).resolve().parents[3] / "shared" / "data" / "retail"
FAST = {"epochs": "3", "n_estimators": "2", "hidden_size": "8", "train_start": "2010-02-12",
        "train_end": "2011-07-01", "validation_start": "2011-07-08"}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A model trained on 6 synthetic stores, saved and loaded back (history read lazily)."""
    engine = RetailSalesEngine()
    ctx = default_context(engine, "train", FAST)
    trained = engine.train(ctx, engine.feature_pipeline(ctx, generate_retail(seed=3, stores=6, weeks=70)))
    folder = tmp_path_factory.mktemp("model")
    engine.save_model(ctx, trained, folder)
    return engine.load_model(ctx, folder)


def _score(model, source: Path, out: Path, **params) -> pd.DataFrame:
    engine = RetailSalesEngine()
    ctx = default_context(engine, "score", {"scoringResultsDataSetId": str(out), **params},
                          artifact_dir=out.parent)
    data = engine.load_data(ctx, str(source))
    result = engine.score(ctx, model, data)
    if isinstance(result, StreamedScores):
        assert engine.saves_output and len(result) == result.rows
        assert not out.exists()   # nothing at the target before save_output puts it there
        assert engine.save_output(ctx, result) == str(out)
        return pd.read_parquet(out)
    return result.reset_index(drop=True)


@pytest.fixture(scope="module")
def scoring_files(tmp_path_factory):
    """Synthetic scoring data (stores 4..9, three of them unknown to the model, 75 weeks from
    2011-01-07, so history from the model fills year-ago weeks) in date order as written, as
    CSV and Parquet, and shuffled."""
    folder = tmp_path_factory.mktemp("scoring")
    frame = generate_retail(seed=5, stores=9, weeks=175)
    frame = frame[(frame["store"] >= 4) & (frame["date"] >= "2011-01-07")].reset_index(drop=True)
    frame = frame.head(75 * 6)
    csv = frame.assign(date=frame["date"].dt.strftime("%-m/%-d/%y"),
                       isHoliday=np.where(frame["isHoliday"], "TRUE", "FALSE"))
    csv.to_csv(folder / "scoring.csv", index=False)
    frame.to_parquet(folder / "scoring.parquet", index=False)
    frame.sample(frac=1.0, random_state=1).to_parquet(folder / "shuffled.parquet", index=False)
    return folder


@pytest.mark.parametrize("name", ["scoring.csv", "scoring.parquet", "shuffled.parquet"])
@pytest.mark.parametrize("chunk_rows", [7, 50, 200, 100_000])
def test_chunked_scores_equal_the_whole_file_path(model, scoring_files, tmp_path, name, chunk_rows):
    # 7 and 50 rows: chunk boundaries fall inside every store's history (75 weeks each), so the
    # previous weeks are carried from chunk to chunk; 200: ranges of whole stores; batch_size 16
    # puts inference batch boundaries inside chunks as well.
    source = scoring_files / name
    whole = _score(model, source, tmp_path / "whole.parquet", chunk_rows=0, batch_size=16)
    chunked = _score(model, source, tmp_path / "chunked.parquet", chunk_rows=chunk_rows,
                     batch_size=16)
    assert len(whole) == 450 and whole["prediction"].notna().sum() > 300
    pd.testing.assert_frame_equal(chunked, whole, check_exact=True)


def test_chunked_scores_of_the_real_retail_csv(model, tmp_path):
    source = RETAIL / "retail-scoring.csv"
    whole = _score(model, source, tmp_path / "whole.parquet", chunk_rows=0)
    chunked = _score(model, source, tmp_path / "chunked.parquet", chunk_rows=300)
    pd.testing.assert_frame_equal(chunked, whole, check_exact=True)


def test_csv_target_gets_the_same_scores_through_the_worker_path(model, scoring_files, tmp_path):
    whole = _score(model, scoring_files / "scoring.csv", tmp_path / "w.csv", chunk_rows=0)
    chunked = _score(model, scoring_files / "scoring.csv", tmp_path / "c.csv", chunk_rows=40)
    pd.testing.assert_frame_equal(chunked, whole, check_exact=True)


def test_a_duplicate_week_across_chunks_fails_and_leaves_the_target_alone(model, scoring_files, tmp_path):
    frame = pd.read_parquet(scoring_files / "scoring.parquet")
    frame = pd.concat([frame, frame.iloc[[3]]], ignore_index=True)   # store 7's first week, twice
    frame.to_parquet(tmp_path / "dup.parquet", index=False)
    out = tmp_path / "scores.parquet"
    out.write_bytes(b"earlier scores")
    for chunk_rows in (0, 5, 1000):
        with pytest.raises(ConfigError, match="more than one row for the same store and date"):
            _score(model, tmp_path / "dup.parquet", out, chunk_rows=chunk_rows)
    assert out.read_bytes() == b"earlier scores"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # no temp or spill left


def test_the_source_is_described_without_being_read(tmp_path):
    frame = generate_retail(seed=1, stores=3, weeks=10)
    frame.to_parquet(tmp_path / "d.parquet", index=False)
    source = ChunkedSource(resolve_dataset(str(tmp_path / "d.parquet")), 1000)
    assert len(source) == 30 and list(source.columns) == list(frame.columns)


def test_chunked_training_gives_the_whole_frame_model(tmp_path):
    """Features built a range of whole stores at a time (shuffled rows, ranges of ~2 stores,
    and ranges smaller than a store), gathered on disk: the same inputs in the same order, so
    the same normalisation, weights, history, per-epoch curves and evaluation metrics as the
    whole-frame path; the matrix files go when training ends, the history with the model."""
    import gc

    import torch

    generate_retail(seed=3, stores=7, weeks=120).sample(frac=1.0, random_state=2).to_parquet(
        tmp_path / "train.parquet", index=False)
    trained = {}
    for chunk_rows in ("0", "250", "20"):
        engine = RetailSalesEngine()
        curves: list = []
        ctx = default_context(engine, "train", {**FAST, "train_end": "2011-12-30",
                                                "validation_start": "2012-01-06",
                                                "chunk_rows": chunk_rows}, artifact_dir=tmp_path,
                              log_metric=lambda name, value, step=None, valueType=None:
                              curves.append((name, value, step)))
        data = engine.load_data(ctx, str(tmp_path / "train.parquet"))
        assert isinstance(data, ChunkedSource) == (chunk_rows != "0")
        model = engine.train(ctx, engine.feature_pipeline(ctx, data))
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".retail-train-")]
        trained[chunk_rows] = (model, engine.evaluate(ctx, model, data), curves)
    whole, whole_metrics, whole_curves = trained["0"]
    assert whole_metrics and whole.meta["training_rows"] > 250
    assert {name for name, _, step in whole_curves if step == 3} >= {"trainingLoss", "MAPE"}
    for chunk_rows in ("250", "20"):
        model, metrics, curves = trained[chunk_rows]
        assert {k: v for k, v in model.meta.items()} == whole.meta
        for name, tensor in whole.net.state_dict().items():
            assert torch.equal(model.net.state_dict()[name], tensor), name
        pd.testing.assert_frame_equal(model.history, whole.history, check_exact=True)
        assert curves == whole_curves
        assert [m.name for m in metrics] == [m.name for m in whole_metrics]
        assert [m.value for m in metrics] == pytest.approx([m.value for m in whole_metrics], rel=1e-9)
    saved = tmp_path / "saved"
    RetailSalesEngine().save_model(ctx, trained["20"][0], saved)
    pd.testing.assert_frame_equal(pd.read_parquet(saved / "history.parquet"), whole.history)
    del model, whole, trained
    gc.collect()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # spills removed


def test_training_set_numbers_hardly_depend_on_the_block_size(tmp_path, monkeypatch):
    """Statistics and the matrix are read back in blocks (summed exactly across them): a block
    of 7 rows gives the numbers a block larger than the data gives, up to float rounding."""
    from engines.retail_sales import training_set
    from engines.retail_sales.features import build_features
    from engines.retail_sales.params import TrainParams

    frame = build_features(generate_retail(seed=4, stores=3, weeks=90))
    params = TrainParams(validation_start="2011-06-03")
    got = []
    for block in (7, 1 << 20):
        monkeypatch.setattr(training_set, "BLOCK_ROWS", block)
        data = training_set.TrainingSet.gather(iter([frame]), params, tmp_path, validation=True)
        got.append((data.mean, data.std, data.naive_scale, np.array(data.x), data.y.copy(),
                    data.epoch_validation(["MAPE"], torch_cpu()).x.numpy().copy()))
        data.close()
        data.discard_history()
    for a, b in zip(*got):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)
    rows = got[0][3]
    assert rows.dtype == np.float32 and rows.shape[1] == len(data.inputs) > 5
    np.testing.assert_allclose(rows.mean(axis=0), 0, atol=1e-5)   # standardised
    assert not list(tmp_path.iterdir())


def torch_cpu():
    import torch

    return torch.device("cpu")


@pytest.mark.parametrize("chunk_rows", ["0", "100"])
def test_a_failed_training_leaves_no_files_behind(tmp_path, chunk_rows):
    generate_retail(seed=3, stores=3, weeks=80).to_parquet(tmp_path / "train.parquet", index=False)
    engine = RetailSalesEngine()
    ctx = default_context(engine, "train", {**FAST, "train_start": "2030-01-01", "train_end": None,
                                            "chunk_rows": chunk_rows}, artifact_dir=tmp_path)
    data = engine.load_data(ctx, str(tmp_path / "train.parquet"))
    with pytest.raises(ConfigError, match="No training rows"):
        engine.train(ctx, engine.feature_pipeline(ctx, data))
    assert [p.name for p in tmp_path.iterdir()] == ["train.parquet"]
