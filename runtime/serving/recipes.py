"""What answers a host's requests, per kind of engine: an engine's own `online` hook (or the
default, which wraps its `score`); a function recipe's scorer, which takes a frame, served as it
is; a class recipe's scorer run unchanged, its `platform_sdk` reading the request's rows and
capturing the frame it writes in memory (no data set round trip).
"""
from __future__ import annotations

import threading
from typing import Any

from ..engine import Engine, OnlinePredictor, TaskContext
from ..errors import MLRuntimeError

# The data sets a class recipe's scorer is handed online: never files, the request and its answer.
REQUEST_DATASET = "/online-request/rows.parquet"
ANSWER_DATASET = "/online-answer/rows.parquet"
CLASS_SLOW = ("a class recipe's scorer reads its model from modelPATH on every call: each "
              "request pays for loading it")


def predictor_for(engine: Engine, ctx: TaskContext, model: Any) -> OnlinePredictor:
    from ..recipes.python_classes import ClassRecipe

    if isinstance(engine, ClassRecipe):
        return class_recipe_predictor(engine, ctx, model)
    return engine.online(ctx, model)


class _Capture(threading.local):
    request: Any = None
    answer: Any = None


_capture = _Capture()


def class_recipe_predictor(engine: Any, ctx: TaskContext, model: Any) -> OnlinePredictor:
    """The scorer's `score(config)` with scoringDataSetId reading the request and
    scoringResultsDataSetId capturing what it writes."""
    engine._ready_imports()   # the recipe's root and, in this environment, compat/'s platform_sdk
    _route_platform_sdk()
    online_ctx = TaskContext(task=ctx.task, params=ctx.params.model_copy(update={
        "scoringDataSetId": REQUEST_DATASET, "scoringResultsDataSetId": ANSWER_DATASET}),
        device=ctx.device, threads=ctx.threads, logger=ctx.logger,
        artifact_dir=ctx.artifact_dir, model_digest=ctx.model_digest)

    def predict(frame: Any) -> Any:
        _capture.request, _capture.answer = frame, None
        try:
            engine.score(online_ctx, model, None)
            if _capture.answer is None:
                raise MLRuntimeError("The recipe's scorer wrote no frame with DatasetWriter to "
                                     "its scoringResultsDataSetId", status=500)
            return _capture.answer
        finally:
            _capture.request = _capture.answer = None

    return OnlinePredictor(predict=predict, row_independent=False, slow=CLASS_SLOW)


def _route_platform_sdk() -> None:
    """platform_sdk's reader and writer, in this host only, serve the request and capture the
    answer when handed the online data sets; every other data set reads and writes as before."""
    from platform_sdk import dataset_reader, dataset_writer

    if getattr(dataset_reader, "_online", False):
        return
    read, write = dataset_reader.read_dataset, dataset_writer.write_dataset

    def read_online(ref: Any, *args: Any, **kwargs: Any) -> Any:
        if str(getattr(ref, "path", "")) == REQUEST_DATASET and _capture.request is not None:
            return _capture.request.copy()
        return read(ref, *args, **kwargs)

    def write_online(frame: Any, ref: Any, *args: Any, **kwargs: Any) -> Any:
        if str(getattr(ref, "path", "")) == ANSWER_DATASET:
            _capture.answer = frame
            return ANSWER_DATASET
        return write(frame, ref, *args, **kwargs)

    dataset_reader.read_dataset = read_online
    dataset_writer.write_dataset = write_online
    dataset_reader._online = True
