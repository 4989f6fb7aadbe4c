"""The engine plugin contract: what an engine is, how it is found, and what its stages receive.

Engines know nothing of the API, the store or the backend: they get data, typed parameters and a
`TaskContext`, and return frames, models and metrics. This module stays cheap to import (no torch).
"""
from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal, Mapping, Optional, Protocol

from pydantic import BaseModel, ConfigDict, ValidationError

from . import entry_points
from .errors import ConfigError, EngineNotFound
from .tasks import FEATURE_PIPELINE, SCORE, TASK_NAMES, TRAIN, canonical_task

if TYPE_CHECKING:  # pandas is only needed by the stages, not by whoever lists engines
    import pandas as pd

__all__ = [
    "ENTRY_POINT_GROUP", "Engine", "EngineParams", "Metric", "Progress", "ProgressFactory",
    "OnlinePredictor", "TaskContext", "TextProgress", "NullProgress", "default_context",
    "installed_engines", "load_engine", "parse_params", "read_table",
    # re-exported so an engine imports every name it needs from one place
    "TRAIN", "SCORE", "FEATURE_PIPELINE",
]

ENTRY_POINT_GROUP = "mlinstance_runtime.engines"


class Metric(BaseModel):
    """One evaluation metric, serialised as the Sensei insight metric `{name, value, valueType}`."""

    model_config = ConfigDict(frozen=True)

    name: str
    value: float
    valueType: str = "double"


class EngineParams(BaseModel):
    """Base of every engine's per-task parameter schema.

    Keys with dots (`evaluation.metrics`) are declared with `Field(alias=...)`; `populate_by_name`
    lets Python code use the attribute name too. Unknown keys are refused unless an engine opts in
    with `accepts_extra_keys = True` (see `parse_params`).
    """

    model_config = ConfigDict(populate_by_name=True, extra="forbid")


# --- progress -------------------------------------------------------------------------------

class Progress(Protocol):
    def update(self, n: int = 1) -> None: ...
    def close(self) -> None: ...


ProgressFactory = Callable[[int, str], Progress]


class NullProgress:
    """Progress that reports nothing: the default for tests and benchmarks."""

    def __init__(self, total: int = 0, desc: str = "") -> None:
        self.total, self.desc, self.n = total, desc, 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def close(self) -> None:
        pass


class TextProgress(NullProgress):
    """Progress logged as text at about every tenth of the way (no terminal tricks: logs are files)."""

    def __init__(self, total: int, desc: str = "", logger: logging.Logger | None = None) -> None:
        super().__init__(total, desc)
        self._logger = logger or logging.getLogger("runtime.engine.progress")
        self._step = max(1, total // 10)
        self._next = self._step

    def update(self, n: int = 1) -> None:
        super().update(n)
        if self.n >= self._next or self.n == self.total:
            self._logger.info("%s: %d/%d", self.desc, self.n, self.total)
            self._next = self.n + self._step

    def close(self) -> None:
        if self.n and self.n != self.total:
            self._logger.info("%s: %d/%d", self.desc, self.n, self.total)


# --- the context ----------------------------------------------------------------------------

@dataclass
class TaskContext:
    """What a stage may know about the run it is part of. Callers replace the callables."""

    task: str
    params: BaseModel
    device: str = "cpu"
    threads: int = 1
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("runtime.engine"))
    # log_metric(name, value) sets a final metric; log_metric(name, value, step) adds a point to
    # the metric's per-step series; log_metric(name, value, valueType="double") as before.
    log_metric: Callable[..., None] = field(default=lambda name, value, step=None, valueType=None: None)
    progress: ProgressFactory = NullProgress
    artifact_dir: Path = field(default_factory=Path.cwd)
    spark: Any = None
    model_digest: str | None = None   # score: the digest recorded when the runtime wrote the model

    def __post_init__(self) -> None:
        self.task = canonical_task(self.task)
        if self.task not in TASK_NAMES:
            raise ConfigError(f"Unknown task {self.task!r}: expected one of {', '.join(TASK_NAMES)}")
        self.artifact_dir = Path(self.artifact_dir)


def default_context(engine: type[Engine] | Engine, task: str, params: Mapping[str, Any] | BaseModel | None = None,
                    *, device: str = "cpu", threads: int = 1, artifact_dir: Path | str | None = None,
                    log_metric: Callable[..., None] | None = None,
                    progress: ProgressFactory | None = None,
                    logger: logging.Logger | None = None) -> TaskContext:
    """A context for tests and local calls: parameters parsed with the engine's schema, metrics
    collected nowhere unless `log_metric` is given, progress silent unless `progress` is given."""
    task = canonical_task(task)
    typed = params if isinstance(params, BaseModel) else parse_params(engine, task, params or {})
    return TaskContext(
        task=task, params=typed, device=device, threads=threads,
        logger=logger or logging.getLogger(f"runtime.engine.{engine.name}"),
        log_metric=log_metric or (lambda name, value, step=None, valueType=None: None),
        progress=progress or NullProgress,
        artifact_dir=Path(artifact_dir) if artifact_dir is not None else Path.cwd())


# --- the engine base class ------------------------------------------------------------------

class Engine:
    """Base class of every engine. Subclasses set the class attributes and implement the stages.

    `feature_pipeline` defaults to the identity and `evaluate` to no metrics; `train`,
    `save_model`, `load_model` and `score` must be implemented. Models are saved in safe formats
    only (torch state_dict loaded with `weights_only=True`, JSON, Parquet): never pickle.
    """

    name: ClassVar[str]
    kind: ClassVar[Literal["python", "pyspark"]] = "python"
    params: ClassVar[dict[str, type[BaseModel]]] = {}
    accepts_extra_keys: ClassVar[bool] = False
    description: ClassVar[str] = ""
    # Modules a warm parent imports before it forks this engine's runs (runtime.forkserver): its
    # heavy libraries and its own modules that import them. Never modules that start threads or
    # touch CUDA at import (the parent refuses those and says so).
    preload: ClassVar[tuple[str, ...]] = ()
    # The same for a model host (runtime.serving), where no data set is read or written; None:
    # `preload`. A server starts the warm parent of its published Models' environment with these.
    online_preload: ClassVar[Optional[tuple[str, ...]]] = None
    # What `score` and `evaluate` receive: "features" (Sensei's order: feature_pipeline's output)
    # or "raw" (the loaded rows, for an engine that rebuilds its features itself, e.g. with a
    # model's stored history).
    score_input: ClassVar[Literal["features", "raw"]] = "features"

    def load_data(self, ctx: TaskContext, uri: str) -> pd.DataFrame:
        return read_table(uri)

    def feature_pipeline(self, ctx: TaskContext, data: pd.DataFrame) -> pd.DataFrame:
        return data

    def train(self, ctx: TaskContext, features: pd.DataFrame) -> Any:
        raise NotImplementedError(f"engine {self.name!r} does not implement train")

    def save_model(self, ctx: TaskContext, model: Any, directory: Path) -> None:
        raise NotImplementedError(f"engine {self.name!r} does not implement save_model")

    def load_model(self, ctx: TaskContext, directory: Path) -> Any:
        raise NotImplementedError(f"engine {self.name!r} does not implement load_model")

    def score(self, ctx: TaskContext, model: Any, data: pd.DataFrame) -> pd.DataFrame:
        raise NotImplementedError(f"engine {self.name!r} does not implement score")

    def evaluate(self, ctx: TaskContext, model: Any, data: pd.DataFrame) -> list[Metric]:
        return []

    def explain(self, ctx: TaskContext, data: pd.DataFrame) -> list[str]:
        """Lines that `--explain` prints about how this task will use its input data (a train /
        validation split, the rows on each side); `data` is the loaded input. Default: none."""
        return []

    def online(self, ctx: TaskContext, model: Any) -> OnlinePredictor:
        """How a loaded model answers online requests (runtime.serving): the default scores each
        batch of rows with `score` (after `feature_pipeline` unless `score_input` is "raw");
        an engine overrides it to index what it needs once, declare its input, or say that its
        rows depend on each other."""
        def predict(frame: pd.DataFrame) -> pd.DataFrame:
            if self.score_input != "raw":
                frame = self.feature_pipeline(ctx, frame)
            return self.score(ctx, model, frame)

        return OnlinePredictor(predict=predict)


@dataclass
class OnlinePredictor:
    """What a model host calls per micro-batch. `input_schema` maps column to kind ("number",
    "integer", "string", "boolean", "datetime") for casting and 4xx messages; `required` columns
    must be sent; `row_independent` False: each request is predicted on its own, never batched
    with others; `predict_many` (optional) predicts several requests' frames in one pass, one
    frame back per request; `slow` says why every call is slow (a scorer that reloads its model);
    `takes_columns`: each request's rows arrive as typed numpy arrays by column name (small
    requests never become a pandas frame; runtime.serving.columns), and answers may be such
    columns too."""

    predict: Callable[[Any], Any]
    input_schema: dict[str, str] | None = None
    required: tuple[str, ...] = ()
    example: dict[str, Any] | None = None
    row_independent: bool = True
    predict_many: Callable[[list[Any]], list[Any]] | None = None
    slow: str | None = None
    takes_columns: bool = False


def read_table(uri: str | Path) -> pd.DataFrame:
    """A data set read through runtime.datasets: a registered id (the run's catalog), a local path
    or a `file://` URI, as Parquet, CSV or JSON lines (by file name or catalog entry)."""
    from .datasets import read_dataset, resolve_dataset

    return read_dataset(resolve_dataset(str(uri)))


def parse_params(engine: type[Engine] | Engine, task: str, values: Mapping[str, Any]) -> BaseModel:
    """`values` validated with the engine's schema for `task`; a bad key or value is a ConfigError.

    Engines with `accepts_extra_keys` keep unknown keys (as model extras) instead of refusing them.
    """
    task = canonical_task(task)
    schema = engine.params.get(task)
    if schema is None:
        if values and not engine.accepts_extra_keys:
            raise ConfigError(f"Engine {engine.name!r} takes no parameters for task {task!r}, "
                              f"got: {', '.join(sorted(values))}")
        schema = EngineParams
    if engine.accepts_extra_keys and schema.model_config.get("extra") != "allow":
        schema = type(schema.__name__, (schema,), {"model_config": {**schema.model_config, "extra": "allow"}})
    try:
        return schema.model_validate(dict(values))
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}"
                             for err in exc.errors())
        raise ConfigError(f"Invalid {task} parameters for engine {engine.name!r}: {problems}") from exc


# --- discovery ------------------------------------------------------------------------------

_FROZEN_ENGINES: dict[str, metadata.EntryPoint] | None = None

# Engine references that are not names: a prefix, and the entry point that loads such a reference
# (`recipe:<kind>:<stored folder>`, a user's recipe wrapped in an adapter Engine). The adapters
# subclass Engine, so this contract names their loader rather than importing it. Declared here, not
# in pyproject.toml: the worker also runs in recipe environments, where the runtime's source is on
# the path but its distribution's entry points are not installed.
REFERENCE_LOADERS: dict[str, metadata.EntryPoint] = {
    "recipe:": metadata.EntryPoint(name="recipe", value="runtime.recipes:load_recipe_engine",
                                   group="mlinstance_runtime.engine_references"),
}


def installed_engines() -> dict[str, metadata.EntryPoint]:
    """Engines registered in the `mlinstance_runtime.engines` entry-point group, by name."""
    if _FROZEN_ENGINES is not None:
        return dict(_FROZEN_ENGINES)
    return entry_points.group(ENTRY_POINT_GROUP)


def freeze_installed_engines() -> None:
    """Read the entry points once for this process and its forks (a warm parent: it retires when
    a package is installed or removed, so the table never goes stale there)."""
    global _FROZEN_ENGINES
    _FROZEN_ENGINES = installed_engines()


def load_engine(name_or_path: str) -> type[Engine]:
    """The engine class for an entry-point name (`retail-sales`) or an import path
    (`package.module:ClassName`), or the adapter of a stored recipe (`recipe:<kind>:<folder>`).
    Unknown names raise EngineNotFound listing what is installed."""
    for prefix, loader in REFERENCE_LOADERS.items():
        if name_or_path.startswith(prefix):
            return loader.load()(name_or_path)
    engines = installed_engines()
    if name_or_path in engines:
        try:
            cls = engines[name_or_path].load()
        except ImportError as exc:
            raise EngineNotFound(f"Engine {name_or_path!r} is installed but cannot be imported: {exc}") from exc
        return _checked(cls, name_or_path)
    if ":" in name_or_path:
        module_name, _, attr = name_or_path.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise EngineNotFound(f"Cannot import engine module {module_name!r}: {exc}") from exc
        cls = module
        for part in attr.split("."):
            cls = getattr(cls, part, None)
            if cls is None:
                raise EngineNotFound(f"Module {module_name!r} has no engine class {attr!r} "
                                     f"(engine {name_or_path!r})")
        return _checked(cls, name_or_path)
    listed = ", ".join(sorted(engines)) or "none"
    raise EngineNotFound(f"Unknown engine {name_or_path!r}; installed engines: {listed}. "
                         "Give an installed name or an import path 'package.module:ClassName'.")


def _checked(cls: Any, source: str) -> type[Engine]:
    if not isinstance(cls, type):
        raise EngineNotFound(f"{source!r} is not an engine class")
    missing = [a for a in ("name", "kind", "params") if not hasattr(cls, a)]
    stages = [s for s in ("train", "save_model", "load_model", "score") if not callable(getattr(cls, s, None))]
    if missing or stages:
        raise EngineNotFound(f"{source!r} does not follow the engine contract; missing "
                             f"{', '.join(missing + stages)}")
    if cls.kind not in ("python", "pyspark"):
        raise EngineNotFound(f"{source!r} has kind {cls.kind!r}; expected 'python' or 'pyspark'")
    unknown = set(cls.params) - set(TASK_NAMES)
    if unknown:
        raise EngineNotFound(f"{source!r} declares parameters for unknown tasks: {', '.join(sorted(unknown))}")
    return cls
