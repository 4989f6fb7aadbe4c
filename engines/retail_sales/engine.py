"""The built-in `retail-sales` engine: forecast next week's weeklySales of each store.

numpy, pandas and torch are imported inside the stages, so listing or loading the engine class
(which the CLI does before it starts a worker) stays cheap.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.engine import FEATURE_PIPELINE, SCORE, TRAIN, Engine, Metric, TaskContext, read_table
from runtime.errors import ConfigError

from .history import features_with_history
from .params import FeaturePipelineParams, ScoreParams, TrainParams
from .schema import METRIC_NAMES, label_column

if TYPE_CHECKING:
    import pandas as pd

    from .chunked import ChunkedSource, StreamedScores
    from .model import RetailSalesModel

# Rows per inference batch on CUDA when the run does not set batch_size.
CUDA_BATCH_SIZE = 1 << 16

class RetailSalesEngine(Engine):
    name = "retail-sales"
    kind = "python"
    description = ("Next week's weeklySales per store (Adobe's retail-sales sample task): "
                   "a bagged torch MLP on lag and year-ago features; CPU or CUDA.")
    params = {TRAIN: TrainParams, SCORE: ScoreParams, FEATURE_PIPELINE: FeaturePipelineParams}
    accepts_extra_keys = False
    score_input = "raw"  # score/evaluate rebuild features with the model's history; either input works
    # What a warm parent imports before forking a run (runtime.forkserver): the stages' modules.
    # torch._dynamo: torch's optimisers import it on their first step (about 1 s).
    preload = ("numpy", "pandas", "pyarrow.parquet", "torch", "torch._dynamo",
               "engines.retail_sales.features",
               "engines.retail_sales.model", "engines.retail_sales.metrics",
               "engines.retail_sales.validation", "engines.retail_sales.training_set")

    # Set by a chunked score that wrote its Parquet scores itself (the worker then calls
    # save_output to put them in place instead of writing a frame).
    saves_output = False

    # --- stages ---------------------------------------------------------------------------

    def load_data(self, ctx: TaskContext, uri: str) -> Any:
        """The data set; for a score or train run, unless `chunk_rows` is 0, a ChunkedSource that
        the stages read a chunk at a time. Unset, the choice is automatic (and said in the log):
        the whole file when its rows fit the memory budget (sizing.plan), else chunks sized from
        it. A train decides here; a score decides in `score`, once the model's history (whose
        rows its features also hold) is known."""
        chunk_rows = getattr(ctx.params, "chunk_rows", 0)
        if ctx.task in (SCORE, TRAIN) and isinstance(ctx.params, (ScoreParams, TrainParams)) \
                and chunk_rows != 0:
            from runtime.datasets import resolve_dataset

            from .chunked import ChunkedSource

            source = ChunkedSource(resolve_dataset(uri), chunk_rows or 0)
            if chunk_rows or ctx.task == SCORE:
                return source
            from .sizing import TRAIN_ROW_BYTES, TRAIN_WHOLE_ROW_BYTES, plan

            chosen = plan(len(source), whole_row_bytes=TRAIN_WHOLE_ROW_BYTES,
                          chunk_row_bytes=TRAIN_ROW_BYTES)
            ctx.logger.info("training data %s: %s", source.ref.id, chosen.reason)
            if chosen.whole:
                return read_table(uri)
            source.chunk_rows = chosen.chunk_rows
            return source
        return read_table(uri)

    def feature_pipeline(self, ctx: TaskContext, data: pd.DataFrame) -> pd.DataFrame:
        from .chunked import ChunkedSource
        from .features import build_features

        if isinstance(data, ChunkedSource):   # a chunked train builds them range by range
            return data
        return build_features(data, _target(ctx))

    def train(self, ctx: TaskContext, features: pd.DataFrame | ChunkedSource) -> RetailSalesModel:
        from .chunked import ChunkedSource, store_ranges
        from .features import build_features
        from .model import FORMAT_VERSION, RetailSalesModel, configure_matmul, fit
        from .training_set import TrainingSet

        params = ctx.params
        if not isinstance(params, TrainParams):
            raise ConfigError(f"retail-sales train needs its train parameters, got {type(params).__name__}")
        device = _torch_device(ctx)
        configure_matmul(device, params.tf32)
        target, label = params.target, label_column(params.target)
        work_dir = work_folder(ctx)
        chunked = isinstance(features, ChunkedSource)
        if isinstance(features, ChunkedSource):
            # Features a range of whole stores at a time, each range's rows onto disk as it is
            # built: memory holds one range, never the feature matrix.
            ctx.logger.info("building features of %s in ranges of about %d rows",
                            features.ref.id, features.chunk_rows)
            frames = (build_features(piece, target) for piece in
                      store_ranges(features, target, work_dir, split=False))
        else:
            frames = iter([features if label in features.columns else build_features(features, target)])
        names = params.metric_names()
        # A whole frame is in memory already: its rows are gathered there too (no files).
        data = TrainingSet.gather(frames, params, work_dir, in_memory=not chunked,
                                  validation=bool(params.validation_every_epochs and names))
        del frames
        try:
            net, losses = self._fit(ctx, params, data, device, fit)
        except BaseException:
            data.discard_history()
            raise
        finally:
            data.close()
        ctx.log_metric("trainingLoss", losses[-1], "double")

        meta = {
            "format_version": FORMAT_VERSION, "engine": self.name, "target": target, "label": label,
            "inputs": data.inputs, "mean": data.mean.tolist(), "std": data.std.tolist(),
            "naive_scale": data.naive_scale, "training_rows": data.rows,
            "hyperparameters": {"hidden_size": params.hidden_size, "max_depth": params.max_depth,
                                "n_estimators": params.n_estimators, "epochs": params.epochs,
                                "learning_rate": params.learning_rate, "seed": params.seed,
                                "precision": params.precision, "compile": params.compile,
                                "tf32": params.tf32 and device.type == "cuda",
                                "device": str(device)},
        }
        history_file, folder = data.take_history()
        return RetailSalesModel(net=net, meta=meta, history=data.history, history_file=history_file,
                                owned_folder=folder)

    def _fit(self, ctx: TaskContext, params: TrainParams, data: Any, device: Any,
             fit: Any) -> tuple[Any, list[float]]:
        """The network trained on the TrainingSet's matrix, per-epoch curves logged."""
        if not data.rows:
            raise ConfigError(
                f"No training rows: none dated {params.train_start}..{params.train_end} has a label "
                f"and every input feature (year-ago features need 60 weeks of history)")
        validation = data.epoch_validation(params.metric_names(), device,
                                           params.validation_sample_rows, params.seed) \
            if params.validation_every_epochs else None
        if validation is not None:
            every = params.validation_every_epochs
            sampled = validation.rows < validation.total_rows
            ctx.logger.info(
                "per-epoch validation on %s of the %d validation rows%s, every %s "
                "(validation_sample_rows=%d, validation_every_epochs=%d); the final metrics use all",
                validation.rows if sampled else "all", validation.total_rows,
                f" (a fixed sample drawn with seed {params.seed})" if sampled else "",
                "epoch" if every == 1 else f"{every} epochs and the last",
                params.validation_sample_rows, every)
        progress = ctx.progress(params.epochs, "epochs")
        batches = ctx.progress(params.epochs * max(1, -(-data.rows // params.batch_size)), "batches")
        losses: list[float] = []

        def on_epoch(epoch: int, loss: float, net: Any) -> None:
            # Per-epoch curves: the training loss, and the validation metrics evaluate reports.
            losses.append(loss)
            ctx.log_metric("trainingLoss", loss, epoch + 1)
            every = params.validation_every_epochs
            if validation is not None and ((epoch + 1) % every == 0 or epoch + 1 == params.epochs):
                for metric in validation.metrics(net):
                    ctx.log_metric(metric.name, metric.value, epoch + 1)
            progress.update(1)

        ctx.logger.info("training on %d rows, %d inputs, %d members, device %s",
                        data.rows, len(data.inputs), params.n_estimators, device)
        try:
            net = fit(data.x, data.y, hidden_size=params.hidden_size, depth=params.max_depth,
                      members=params.n_estimators, epochs=params.epochs, batch_size=params.batch_size,
                      learning_rate=params.learning_rate, weight_decay=params.weight_decay,
                      seed=params.seed, device=device, on_epoch=on_epoch,
                      on_batch=lambda rows: batches.update(1), precision=params.precision,
                      compile=params.compile)
        finally:
            batches.close()
            progress.close()
        return net, losses

    def save_model(self, ctx: TaskContext, model: RetailSalesModel, directory: Path) -> None:
        model.save(Path(directory))

    def load_model(self, ctx: TaskContext, directory: Path) -> RetailSalesModel:
        from .model import RetailSalesModel

        return RetailSalesModel.load(Path(directory), _torch_device(ctx))

    def score(self, ctx: TaskContext, model: RetailSalesModel,
              data: pd.DataFrame | ChunkedSource) -> pd.DataFrame | StreamedScores:
        """`date, store, prediction`: the forecast of the week after `date` for that store, in
        (store, date) order. A ChunkedSource is scored a chunk at a time, to the same scores."""
        from .chunked import ChunkedSource

        if isinstance(data, ChunkedSource) and not data.chunk_rows:
            data = self._choose(ctx, model, data)
        if isinstance(data, ChunkedSource):
            return self._score_chunks(ctx, model, data)
        frame = self._predict(ctx, model, data)
        return frame[["date", "store", "prediction"]].reset_index(drop=True)

    def _choose(self, ctx: TaskContext, model: RetailSalesModel,
                source: ChunkedSource) -> pd.DataFrame | ChunkedSource:
        """The whole file, read now, when it fits the memory budget with every history row the
        model may add to its features; else the source with chunks sized from the budget."""
        from runtime.datasets import read_dataset

        from .sizing import SCORE_ROW_BYTES, SCORE_WHOLE_ROW_BYTES, plan

        history_rows = model.history_rows()
        chosen = plan(len(source) + history_rows, whole_row_bytes=SCORE_WHOLE_ROW_BYTES,
                      chunk_row_bytes=SCORE_ROW_BYTES)
        ctx.logger.info("scoring data %s (%d rows, and up to %d rows of the model's history): %s",
                        source.ref.id, len(source), history_rows, chosen.reason)
        if chosen.whole:
            return read_dataset(source.ref)
        source.chunk_rows = chosen.chunk_rows
        return source

    def save_output(self, ctx: TaskContext, scores: StreamedScores) -> str:
        from .chunked import commit

        return str(commit(scores))

    def _score_chunks(self, ctx: TaskContext, model: RetailSalesModel,
                      source: ChunkedSource) -> pd.DataFrame | StreamedScores:
        """Scores written to a Parquet target row group by row group (StreamedScores, moved into
        place by save_output); for a CSV or JSON lines target, collected for the worker to write."""
        import pandas as pd

        from .chunked import ParquetScoresWriter, StreamedScores, score_chunks

        chunks = score_chunks(source, model, device=_torch_device(ctx),
                              batch_size=self._batch_size(ctx, model), work_dir=work_folder(ctx))
        ctx.logger.info("scoring %s in chunks of %d rows", source.ref.id, source.chunk_rows)
        target = _parquet_target(getattr(ctx.params, "scoringResultsDataSetId", None),
                                 Path(ctx.artifact_dir) / "scores.parquet")
        if target is None:
            return pd.concat(list(chunks), ignore_index=True)
        writer = ParquetScoresWriter(target)
        try:
            for frame in chunks:
                writer.write(frame)
            written = writer.close()
        except BaseException:
            writer.discard()
            raise
        self.saves_output = True
        return StreamedScores(written, target, writer.rows)

    def _batch_size(self, ctx: TaskContext, model: RetailSalesModel | None = None) -> int:
        from .model import DEFAULT_BATCH_SIZE, cpu_batch_rows

        batch_size = getattr(ctx.params, "batch_size", None) or DEFAULT_BATCH_SIZE
        if ctx.device.startswith("cuda") and (isinstance(ctx.params, TrainParams)   # its training batch
                                              or "batch_size" not in ctx.params.model_fields_set):
            batch_size = max(batch_size, CUDA_BATCH_SIZE)   # a GPU wants far larger batches
        elif isinstance(ctx.params, ScoreParams) and "batch_size" not in ctx.params.model_fields_set:
            # Unset on the CPU: sized from the model's width and the cache (each thread's share of
            # a batch's activations about twice its L2; 2048 rows with 2 threads, 8 x 64 hidden
            # and a 1 MiB L2). Same predictions whatever the batch, bit for bit.
            hp = model.meta["hyperparameters"] if model is not None else None
            batch_size = (cpu_batch_rows(hp["n_estimators"], hp["hidden_size"], ctx.threads) if hp
                          else DEFAULT_BATCH_SIZE * max(1, ctx.threads or 1))
        return batch_size

    def evaluate(self, ctx: TaskContext, model: RetailSalesModel, data: pd.DataFrame) -> list[Metric]:
        """Metrics on the validation rows: those with a label, dated from `validation_start`."""
        import pandas as pd

        from .chunked import ChunkedSource
        from .metrics import forecast_metrics

        if isinstance(data, ChunkedSource):
            return self._evaluate_chunks(ctx, model, data)
        frame = self._predict(ctx, model, data)
        label = getattr(ctx.params, "label_column", None) or model.meta["label"]
        if label not in frame.columns:
            raise ConfigError(f"evaluation.labelColumn {label!r} is not a column of the data")
        rows = frame[label].notna() & frame["prediction"].notna()
        start = getattr(ctx.params, "validation_start", None)
        if start is not None:
            rows &= frame["date"] >= pd.Timestamp(start)
        if not rows.any():
            # The model is good without them: register it, and say why there are no metrics.
            ctx.logger.warning("%s", _no_validation_reason(frame, label, start))
            return []
        names = ctx.params.metric_names() if isinstance(ctx.params, TrainParams) else list(METRIC_NAMES)
        return forecast_metrics(frame.loc[rows, label].to_numpy(), frame.loc[rows, "prediction"].to_numpy(),
                                model.meta["naive_scale"], names)

    def _evaluate_chunks(self, ctx: TaskContext, model: RetailSalesModel,
                         source: ChunkedSource) -> list[Metric]:
        """evaluate's metrics, the data predicted a range of whole stores at a time (each with
        its stores' history; the metrics equal the whole frame's up to float rounding)."""
        import numpy as np
        import pandas as pd

        from .chunked import store_ranges
        from .metrics import forecast_metrics

        label = getattr(ctx.params, "label_column", None) or model.meta["label"]
        start = getattr(ctx.params, "validation_start", None)
        actual: list[Any] = []
        predicted: list[Any] = []
        last = None
        for piece in store_ranges(source, model.meta["target"], work_folder(ctx), split=False,
                                  history=model):
            stores = piece["store"].to_numpy()
            history = model.history_for(int(stores.min()), int(stores.max())) if len(stores) \
                else model.history.iloc[0:0]
            frame = self._predict(ctx, model, piece, history)
            if label not in frame.columns:
                raise ConfigError(f"evaluation.labelColumn {label!r} is not a column of the data")
            rows = frame[label].notna() & frame["prediction"].notna()
            if start is not None:
                rows &= frame["date"] >= pd.Timestamp(start)
            actual.append(frame.loc[rows, label].to_numpy())
            predicted.append(frame.loc[rows, "prediction"].to_numpy())
            dates = frame.loc[frame[label].notna(), "date"]
            if len(dates) and (last is None or dates.max() > last):
                last = dates.max()
        if not sum(map(len, actual)):
            ctx.logger.warning("%s", no_validation_message(
                start, last.date().isoformat() if last is not None else None))
            return []
        names = ctx.params.metric_names() if isinstance(ctx.params, TrainParams) else list(METRIC_NAMES)
        return forecast_metrics(np.concatenate(actual), np.concatenate(predicted),
                                model.meta["naive_scale"], names)

    def online(self, ctx: TaskContext, model: RetailSalesModel) -> Any:
        """Online scoring with the history indexed by store once (engines/retail_sales/online.py)."""
        from .online import predictor

        return predictor(self, ctx, model)

    def explain(self, ctx: TaskContext, data: pd.DataFrame) -> list[str]:
        """For `--explain` of a train run: the split and how many rows each side gets."""
        import pandas as pd

        from runtime.datasets import read_dataset

        from .chunked import ChunkedSource
        from .features import build_features, expand_input_features

        if isinstance(data, ChunkedSource):
            data = read_dataset(data.ref)

        params = ctx.params
        if not isinstance(params, TrainParams):
            return []
        target, label = params.target, params.label_column or label_column(params.target)
        frame = build_features(data, target)
        if label not in frame.columns:
            return [f"label column {label!r} is not in the data: no rows to train or validate on"]
        inputs = expand_input_features(params.input_feature_names(), frame.columns)
        labelled = frame[label].notna() & (frame[target] > 0)
        train = labelled.copy()
        if params.train_start is not None:
            train &= frame["date"] >= pd.Timestamp(params.train_start)
        if params.train_end is not None:
            train &= frame["date"] <= pd.Timestamp(params.train_end)
        train &= frame[inputs].apply(pd.to_numeric, errors="coerce").notna().all(axis=1)
        validation = labelled.copy()
        if params.validation_start is not None:
            validation &= frame["date"] >= pd.Timestamp(params.validation_start)
        lines = [f"split: train on rows dated {params.train_start or 'any'}..{params.train_end or 'any'}"
                 f" (train_start, train_end), validate on rows from "
                 f"{params.validation_start or 'the start'} (validation_start)",
                 f"train rows: {int(train.sum())} of {len(frame)} (a label, {target} > 0, every "
                 f"input feature)",
                 f"validation rows: {int(validation.sum())} (a label, {target} > 0)"]
        shown = int(validation.sum())
        if params.validation_every_epochs and 0 < params.validation_sample_rows < shown:
            lines.append(f"per-epoch validation curve: a fixed sample of "
                         f"{params.validation_sample_rows} of those rows (validation_sample_rows; "
                         f"0: all of them); the final metrics use all {shown}")
        if not train.any():
            lines.append("no training rows: the run will fail before training")
        elif not validation.any():
            lines.append(_no_validation_reason(frame, label, params.validation_start))
        return lines

    # --- helpers ---------------------------------------------------------------------------

    def _predict(self, ctx: TaskContext, model: RetailSalesModel, data: pd.DataFrame,
                 history: pd.DataFrame | None = None) -> pd.DataFrame:
        """The feature frame of `data`'s rows, computed with the model's stored history in front
        (so a scoring file without last year still gets year-ago features), plus `prediction`."""
        import numpy as np

        target = model.meta["target"]
        frame = features_with_history(data, model.history if history is None else history, target)
        device = _torch_device(ctx)
        batch_size = self._batch_size(ctx, model)
        log_ratio = model.predict_log_ratio(frame, device, batch_size)
        current = frame[target].to_numpy(dtype="float64")
        with np.errstate(invalid="ignore"):
            prediction = np.where(current > 0, current * np.exp(log_ratio), np.nan)
        frame["prediction"] = prediction
        return frame


def _no_validation_reason(frame: pd.DataFrame, label: str, start: Any) -> str:
    """Why evaluate has no rows, and what to change (a training file that ends before the
    validation window: the last week's label is the week after it)."""
    dates = frame.loc[frame[label].notna(), "date"]
    return no_validation_message(start, dates.max().date().isoformat() if len(dates) else None)


def no_validation_message(start: Any, last: Any) -> str:
    """The warning of a train run without validation rows; `last`: the last labelled date."""
    ends = f"the labelled rows end at {last}" if last else "no row has a label"
    fix = f"move validation_start to {last} or earlier (and train_end before it), or " if last else ""
    return (f"No validation metrics: no row from validation_start {start} has a label and a "
            f"prediction ({ends}); the Model is registered without them. To validate, "
            f"{fix}train on data that reaches past {start}")


def _parquet_target(value: Any, default: Path) -> Path | None:
    """Where the worker would write scores (write_dataset's rules: a folder gets a new batch
    file), when that is a Parquet file; None for a CSV or JSON lines target."""
    from datetime import datetime, timezone
    from uuid import uuid4

    from runtime.data_roots import guard
    from runtime.datasets import resolve_dataset

    ref = resolve_dataset(str(value) if value else str(default))
    if ref.path is None:
        raise ConfigError(f"Cannot write to {value!r}: only local paths and file:// URIs are written")
    guard(ref.id, ref.path)
    path = ref.path
    if path.is_dir() or (not path.exists() and not path.suffix):
        if (ref.format or "parquet") != "parquet":
            return None
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        return path / f"part-{stamp}-{uuid4().hex[:8]}.parquet"
    suffix = path.suffix.lower()
    fmt = ref.format or {".parquet": "parquet", ".pq": "parquet"}.get(suffix) or \
        ("other" if suffix in (".csv", ".jsonl", ".ndjson", ".json") else "parquet")
    return path if fmt == "parquet" else None


def work_folder(ctx: TaskContext) -> Path:
    """Where a stage's work files go (spills, the training matrix, a model's history until it
    is saved): the run's folder; the system's temporary folder when the context names none of
    its own but the current directory (a stage called from Python), never the current directory."""
    import os
    import tempfile

    folder = Path(ctx.artifact_dir)
    try:
        here = folder.resolve() == Path(os.getcwd()).resolve()
    except OSError:
        here = True
    return Path(tempfile.gettempdir()) if here else folder


def _target(ctx: TaskContext) -> str:
    return getattr(ctx.params, "target", None) or "weeklySales"


def _torch_device(ctx: TaskContext) -> Any:
    from .model import torch_device

    return torch_device(ctx.device, ctx.threads)
