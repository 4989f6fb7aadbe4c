"""Entity schemas, defined once with pydantic and shared by the API, the CLI and the store.

Each entity has a write schema (what a client may send: `EngineIn`, `MLInstanceIn`, ...) and a
`Kind` entry describing how it is stored, listed and named. Unknown fields are kept as given
(Sensei clients send fields this contract does not list), so a document round-trips unchanged.
Server-owned fields (`id`, `created`, `createdBy`, `updated`, `deleted`) are set by the service.
"""
from __future__ import annotations

import typing
from enum import Enum
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Annotated, Any, Literal, Optional

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from .tasks import canonical_task

# --------------------------------------------------------------------------------------------
# Scalar conventions


class _TimestampMarker:
    """Marks a str field as an ISO-8601 timestamp (sortable, comparable with < and >)."""


Timestamp = Annotated[str, _TimestampMarker()]


def now_timestamp() -> str:
    """The current UTC time in the API's format, `2019-01-01T00:00:00.000Z`."""
    t = datetime.now(timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def normalize_timestamp(text: str) -> str:
    """Any ISO-8601 date or date-time as the API's UTC format; ValueError when it is not one."""
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    parsed = parsed.astimezone(timezone.utc)
    return parsed.strftime("%Y-%m-%dT%H:%M:%S.") + f"{parsed.microsecond // 1000:03d}Z"


def _as_string(value: Any) -> Any:
    # Parameter values are strings in the API; numbers and booleans from JSON/YAML files are
    # accepted and stored in their string form ("0.3", "true").
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return value


ParamValue = Annotated[str, BeforeValidator(_as_string)]


class _Open(BaseModel):
    """Keeps unknown fields as given."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, defer_build=True)


# --------------------------------------------------------------------------------------------
# Shared pieces


class Creator(_Open):
    displayName: Optional[str] = None
    avatar: Optional[str] = None
    userId: Optional[str] = None


class TaskParameter(_Open):
    """MLInstanceTaskParameter: a `key`, a string `value`, and `secret` (never returned in clear)."""

    key: str = Field(min_length=1)
    value: ParamValue = ""
    secret: Optional[bool] = None


class Task(_Open):
    """MLInstanceTask: parameters and an optional `specification` kept exactly as given."""

    name: str = Field(min_length=1)
    parameters: Optional[list[TaskParameter]] = None
    specification: Optional[dict[str, Any]] = None
    datasets: Optional[dict[str, Any]] = None

    @field_validator("name")
    @classmethod
    def _canonical(cls, name: str) -> str:
        return canonical_task(name)

    @field_validator("parameters")
    @classmethod
    def _unique_keys(cls, params: Optional[list[TaskParameter]]) -> Optional[list[TaskParameter]]:
        seen: set[str] = set()
        for param in params or ():
            if param.key in seen:
                raise ValueError(f"parameter {param.key!r} is given twice")
            seen.add(param.key)
        return params


def _unique_tasks(tasks: Optional[list[Task]]) -> Optional[list[Task]]:
    seen: set[str] = set()
    for task in tasks or ():
        if task.name in seen:
            raise ValueError(f"task {task.name!r} is given twice (fp and featurePipeline are one task)")
        seen.add(task.name)
    return tasks


TaskList = Annotated[Optional[list[Task]], AfterValidator(_unique_tasks)]


class _Resource(_Open):
    """Fields every entity has; the server owns them, so they are ignored on input."""

    id: Optional[str] = None
    created: Optional[Timestamp] = None
    createdBy: Optional[Creator] = None
    updated: Optional[Timestamp] = None
    deleted: Optional[bool] = None


# --------------------------------------------------------------------------------------------
# Entities

ENGINE_TYPES = ("Python", "PySpark", "Spark", "Tensorflow", "R")


class ArtifactImage(_Open):
    location: Optional[str] = None
    name: Optional[str] = None
    executionType: Optional[str] = None
    packagingType: Optional[str] = None


class EngineDefaultArtifact(_Open):
    image: Optional[ArtifactImage] = None
    defaultMLInstanceConfigs: TaskList = None



class EngineArtifacts(_Open):
    default: Optional[EngineDefaultArtifact] = None
    overrides: Optional[list[dict[str, Any]]] = None


class EngineIn(_Resource):
    name: str = Field(min_length=1)
    description: Optional[str] = None
    type: Optional[str] = None
    algorithm: Optional[str] = None
    mlLibrary: Optional[str] = None
    documentationUrl: Optional[str] = None
    iconUrl: Optional[str] = None
    gitRepo: Optional[str] = None
    language: Optional[list[str]] = None
    artifacts: Optional[EngineArtifacts] = None
    tags: Optional[dict[str, str]] = None

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        for known in ENGINE_TYPES:
            if value.strip().lower() == known.lower():
                return known
        raise ValueError(f"unknown engine type {value!r}; expected one of {', '.join(ENGINE_TYPES)}")


class MLInstanceIn(_Resource):
    name: str = Field(min_length=1)
    description: Optional[str] = None
    engineId: str = Field(min_length=1)
    tasks: TaskList = None
    tags: Optional[dict[str, str]] = None



class ExperimentTemplate(_Open):
    experimentRunId: Optional[str] = None
    tasks: TaskList = None
    schedule: Optional[dict[str, Any]] = None
    notification: Optional[dict[str, Any]] = None

    @field_validator("schedule")
    @classmethod
    def _check_schedule(cls, value: Any) -> Any:
        return _checked_schedule(value)



class ExperimentIn(_Resource):
    name: str = Field(min_length=1)
    description: Optional[str] = None
    mlInstanceId: str = Field(min_length=1)
    mlInstanceQuery: Optional[str] = None
    createdByService: Optional[bool] = None
    workflowId: Optional[str] = None
    template: Optional[ExperimentTemplate] = None
    tags: Optional[dict[str, str]] = None


class ExperimentRunIn(_Resource):
    mode: str = Field(min_length=1)
    description: Optional[str] = None
    experimentId: Optional[str] = None
    tasks: TaskList = None
    runChain: Optional[dict[str, Any]] = None



class ModelIn(_Resource):
    name: Optional[str] = None
    description: Optional[str] = None
    experimentId: Optional[str] = None
    experimentRunId: str = Field(min_length=1)
    modelArtifactUri: Optional[str] = None
    state: Optional[list[Literal["trained", "published", "transcoded"]]] = None
    tags: Optional[dict[str, str]] = None


class InsightMetric(_Open):
    name: str = Field(min_length=1)
    value: ParamValue = ""
    valueType: Optional[str] = None


class InsightContext(_Open):
    clientId: Optional[str] = None
    notebookId: Optional[str] = None
    experimentId: Optional[str] = None
    engineId: Optional[str] = None
    mlInstanceId: Optional[str] = None
    experimentRunId: Optional[str] = None
    modelId: Optional[str] = None
    dataSetId: Optional[str] = None


class InsightIn(_Open):
    id: Optional[str] = None
    created: Optional[Timestamp] = None
    updated: Optional[Timestamp] = None
    deleted: Optional[bool] = None
    context: Optional[InsightContext] = None
    events: Optional[dict[str, Any]] = None
    metrics: Optional[list[InsightMetric]] = None


def _checked_schedule(value: Any) -> Any:
    """A schedule's cron, times and time zone are checked when written (runtime.scheduler)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(exclude_none=True)
    if isinstance(value, dict):
        from .errors import ValidationFailed
        from .schedules import check_schedule

        try:
            check_schedule(value)
        except ValidationFailed as exc:
            raise ValueError(exc.detail) from None
    return value


class Schedule(_Open):
    startTime: Optional[str] = None
    endTime: Optional[str] = None
    cron: Optional[str] = None

    @model_validator(mode="after")
    def _check(self) -> "Schedule":
        _checked_schedule(self)
        return self


class MLServiceIn(_Resource):
    name: str = Field(min_length=1)
    description: Optional[str] = None
    mlInstanceId: str = Field(min_length=1)
    trainingExperimentId: Optional[str] = None
    trainingExperimentRunId: Optional[str] = None
    trainingDataSetId: Optional[str] = None
    trainingTimeframe: Optional[int] = None
    scoringExperimentId: Optional[str] = None
    scoringDataSetId: str = Field(min_length=1)
    scoringTimeframe: int
    trainingSchedule: Optional[Schedule] = None
    scoringSchedule: Schedule
    tags: Optional[dict[str, str]] = None
    # Read-only (an extension: next and last fires, published Model), never stored: a
    # GET-modify-PUT round trip may send it back.
    status: Optional[Any] = Field(default=None, exclude=True)


# --------------------------------------------------------------------------------------------
# Kinds: how each entity is stored, listed and addressed


FieldType = Literal["str", "bool", "number", "timestamp"]


def _field_types(model: type[BaseModel], prefix: str = "") -> dict[str, FieldType]:
    """Filterable/sortable fields of a schema: scalars, and scalars of nested objects (dotted)."""
    types: dict[str, FieldType] = {}
    for name, info in model.model_fields.items():
        path = prefix + name
        annotation = info.annotation
        metadata = list(info.metadata)
        args = typing.get_args(annotation)
        inner = next((a for a in args if a is not type(None)), annotation) if args else annotation
        if typing.get_origin(inner) is Annotated:
            metadata = [*metadata, *typing.get_args(inner)[1:]]
            inner = typing.get_args(inner)[0]
        if any(isinstance(m, _TimestampMarker) for m in metadata):
            types[path] = "timestamp"
        elif inner is bool:
            types[path] = "bool"
        elif inner in (int, float):
            types[path] = "number"
        elif inner is str:
            types[path] = "str"
        elif isinstance(inner, type) and issubclass(inner, BaseModel):
            types.update(_field_types(inner, path + "."))
    return types


@dataclass(frozen=True)
class Kind:
    """One entity kind: its schema, its collection path, its content-type profiles, its columns."""

    name: str                       # profile stem: "mlInstance"
    title: str                      # for messages: "MLInstance"
    collection: str                 # URL segment and table name: "mlInstances"
    schema: type[BaseModel]
    columns: tuple[str, ...] = ()   # reference fields kept as indexed columns
    detail_fields: frozenset[str] = frozenset()   # left out of listings (the Summary schemas)
    has_creator: bool = True
    parent: Optional[tuple[str, str]] = None      # (field, parent kind name) that must exist
    kept_on_put: tuple[str, ...] = ()             # server-set fields a PUT keeps unless it sets them
    fields: dict[str, FieldType] = field(default_factory=dict)

    @property
    def profile(self) -> str:
        return f"{self.name}.v1.json"

    @property
    def listing_profile(self) -> str:
        return f"{self.name}Listing.v1.json"


def _kind(**kwargs: Any) -> Kind:
    schema = kwargs["schema"]
    return Kind(fields=_field_types(schema), **kwargs)


ENGINE = _kind(name="engine", title="Engine", collection="engines", schema=EngineIn,
               detail_fields=frozenset({"artifacts", "tags"}))
MLINSTANCE = _kind(name="mlInstance", title="MLInstance", collection="mlInstances",
                   schema=MLInstanceIn, columns=("engineId",),
                   detail_fields=frozenset({"tasks", "tags"}), parent=("engineId", "engine"))
EXPERIMENT = _kind(name="experiment", title="Experiment", collection="experiments",
                   schema=ExperimentIn, columns=("mlInstanceId",),
                   detail_fields=frozenset({"template", "tags"}),
                   parent=("mlInstanceId", "mlInstance"))
EXPERIMENT_RUN = _kind(name="experimentRun", title="Experiment run", collection="experimentRuns",
                       schema=ExperimentRunIn, columns=("experimentId", "mode"),
                       detail_fields=frozenset({"tasks", "runChain", "runtime", "result"}),
                       parent=("experimentId", "experiment"), kept_on_put=("runtime", "result"))
MODEL = _kind(name="model", title="Model", collection="models", schema=ModelIn,
              columns=("experimentRunId", "experimentId"), detail_fields=frozenset({"tags"}),
              parent=("experimentRunId", "experimentRun"),
              kept_on_put=("modelArtifactUri", "experimentId", "modelArtifactDigest"))
INSIGHT = _kind(name="insight", title="Insight", collection="insights", schema=InsightIn,
                columns=(), has_creator=False)
MLSERVICE = _kind(name="mlService", title="MLService", collection="mlServices",
                  schema=MLServiceIn, columns=("mlInstanceId",), detail_fields=frozenset({"tags"}),
                  parent=("mlInstanceId", "mlInstance"))

KINDS: dict[str, Kind] = {k.name: k for k in
                          (ENGINE, MLINSTANCE, EXPERIMENT, EXPERIMENT_RUN, MODEL, INSIGHT, MLSERVICE)}

# Soft deletes cascade down these (child kind, reference field) edges.
CHILDREN: dict[str, tuple[tuple[str, str], ...]] = {
    "engine": (("mlInstance", "engineId"),),
    "mlInstance": (("experiment", "mlInstanceId"), ("mlService", "mlInstanceId")),
    "experiment": (("experimentRun", "experimentId"),),
    "experimentRun": (("model", "experimentRunId"),),
}


# --------------------------------------------------------------------------------------------
# Run states (the contract's six)


class RunStatus(str, Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    RETRY = "RETRY"
    DONE = "DONE"
    FAILED = "FAILED"
    ABORTED = "ABORTED"

    def is_terminal(self) -> bool:
        return self in (RunStatus.DONE, RunStatus.FAILED, RunStatus.ABORTED)


# --------------------------------------------------------------------------------------------
# Read views of stored documents: typed accessors, never a second wire format (the API returns
# the stored JSON as it is; these only read it).


class TaskLog(_Open):
    name: Optional[str] = None
    url: Optional[str] = None


class RunTask(_Open):
    """One task of a run's status document; the run's state is its first task's."""

    id: Optional[str] = None
    name: Optional[str] = None
    state: RunStatus
    tasklogs: list[TaskLog] = []
    message: Optional[str] = None
    started: Optional[Timestamp] = None
    ended: Optional[Timestamp] = None
    logs: Optional[str] = None

    def duration_s(self, now: Optional[datetime] = None) -> Optional[float]:
        """Seconds from started to ended (to `now`, UTC, while it runs); None before it started."""
        if not self.started:
            return None
        end = _parse_timestamp(self.ended) if self.ended else \
            (now or datetime.now(timezone.utc)).replace(tzinfo=None)
        return (end - _parse_timestamp(self.started)).total_seconds()


class RunTasks(_Open):
    tasks: list[RunTask] = Field(min_length=1)


class RunStatusDocument(_Open):
    """GET /experiments/{id}/runs/{runId}/status: the run's tasks with their state and logs."""

    id: Optional[str] = None
    experimentRunId: Optional[str] = None
    name: Optional[str] = None
    deleted: Optional[bool] = None
    status: RunTasks

    @property
    def task(self) -> RunTask:
        return self.status.tasks[0]

    @property
    def state(self) -> RunStatus:
        return self.task.state

    @property
    def message(self) -> Optional[str]:
        return self.task.message

    @property
    def log_names(self) -> set[str]:
        return {log.name for task in self.status.tasks for log in task.tasklogs if log.name}


def run_state_of(status: Optional[dict[str, Any]]) -> Optional[RunStatus]:
    """The state a stored status document records (None for no document)."""
    return None if status is None else RunStatusDocument.model_validate(status).state


def _parse_timestamp(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")


class EngineImage(ArtifactImage):
    """An Engine's `artifacts.default.image` as stored: the write schema's fields and the
    server-owned ones a stored recipe adds (sha256, recipeKind, artifactVersion)."""

    sha256: Optional[str] = None
    recipeKind: Optional[str] = None
    artifactVersion: Optional[int] = None
    requirements: Optional[Any] = None   # a list, or comma-separated text

    @property
    def extra_requirements(self) -> list[str]:
        """`requirements` as a list (it may be comma-separated text)."""
        raw = self.requirements or []
        if isinstance(raw, str):
            raw = raw.split(",")
        return [str(r).strip() for r in raw if str(r).strip()]


def engine_image(engine_doc: Optional[dict[str, Any]]) -> EngineImage:
    """The Engine's default image (empty when it names none); a read view of the stored JSON."""
    image = (((engine_doc or {}).get("artifacts") or {}).get("default") or {}).get("image")
    return EngineImage.model_validate(image if isinstance(image, dict) else {})


# Which state may follow which; every change goes through Registry.transition_run.
RUN_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING: frozenset({RunStatus.RUNNING, RunStatus.ABORTED, RunStatus.FAILED}),
    RunStatus.RUNNING: frozenset({RunStatus.DONE, RunStatus.FAILED, RunStatus.ABORTED,
                                  RunStatus.RETRY}),
    RunStatus.RETRY: frozenset({RunStatus.RUNNING, RunStatus.FAILED, RunStatus.ABORTED}),
    RunStatus.DONE: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.ABORTED: frozenset(),
}

# Default metrics per algorithm, served by GET /insights/metrics (Data Science Workspace's list).
DEFAULT_METRICS: dict[str, list[str]] = {
    "regression": ["MAPE", "MAE", "MASE", "MSE", "RMSE", "R-squared"],
    "classification": ["Precision", "Recall", "Accuracy", "F-score", "AUC", "ROC",
                       "Confusion Matrix"],
    "binaryClassification": ["Precision", "Recall", "Accuracy", "F-score", "AUC", "ROC",
                             "Confusion Matrix"],
    "multiClassClassification": ["Precision", "Recall", "Accuracy", "F-score",
                                 "Confusion Matrix"],
    "forecasting": ["MAPE", "MAE", "MASE", "RMSE"],
}
