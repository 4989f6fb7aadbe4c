"""The service layer: every rule of the registry, shared by the REST API and the CLI.

Neither face holds a business rule: they turn requests into calls on `Registry` and its results
(or its `MLRuntimeError`s) into responses.
"""
from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from contextlib import AbstractContextManager
from typing import Any, Callable, Iterable, Optional
from urllib.parse import unquote, urlparse

from pydantic import BaseModel, ValidationError

from .data_roots import DataRoots, data_roots_for, local_path
from .errors import BadRequest, Conflict, NotFound, ValidationFailed
from .home import Home
from .listing import ListQuery
from .redaction import Redactor
from .schemas import (CHILDREN, DEFAULT_METRICS, ENGINE, EXPERIMENT, EXPERIMENT_RUN, KINDS,
                      MLINSTANCE, MLSERVICE, MODEL, RUN_TRANSITIONS, Kind, RunStatus,
                      RunStatusDocument, engine_image, now_timestamp)
from .store import Scope, Store, open_store
from .tasks import run_mode

SECRET_MASK = "********"
DEFAULT_ORG = "local"
DEFAULT_SANDBOX = "prod"
_SERVER_FIELDS = ("id", "created", "createdBy", "updated", "deleted", "_links",
                  "modelArtifactDigest")


@dataclass(frozen=True)
class Caller:
    """Who asks, and in which org and sandbox."""

    scope: Scope
    user_id: str
    display_name: Optional[str] = None

    @classmethod
    def local(cls, org: Optional[str] = None, sandbox: Optional[str] = None,
              user_id: Optional[str] = None) -> "Caller":
        return cls(Scope(org or os.environ.get("MLRUNTIME_ORG") or DEFAULT_ORG,
                         sandbox or os.environ.get("MLRUNTIME_SANDBOX") or DEFAULT_SANDBOX),
                   user_id or os.environ.get("MLRUNTIME_USER") or _os_user())


def _os_user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # no user name on some containers
        return "local"


@dataclass(frozen=True)
class Page:
    children: list[dict[str, Any]]
    total: int
    query: ListQuery


# --------------------------------------------------------------------------------------------
# Secrets: a parameter with "secret": true is stored but never returned in clear.


def _walk_parameters(node: Any, path: tuple = ()) -> Iterable[tuple[tuple, dict]]:
    """(location, parameter) for every task parameter object in a document."""
    if isinstance(node, dict):
        if "key" in node and "value" in node:
            yield path + (node.get("key"),), node
            return
        for key, value in node.items():
            yield from _walk_parameters(value, path + (key,))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            label = item.get("name", index) if isinstance(item, dict) else index
            yield from _walk_parameters(item, path + (label,))


def mask_secrets(doc: dict[str, Any]) -> dict[str, Any]:
    if not any(p.get("secret") is True for _, p in _walk_parameters(doc)):
        return doc
    import copy

    masked = copy.deepcopy(doc)
    for _, param in _walk_parameters(masked):
        if param.get("secret") is True:
            param["value"] = SECRET_MASK
    return masked


def _restore_secrets(new: dict[str, Any], old: dict[str, Any]) -> None:
    """A GET-modify-PUT round trip sends the mask back: keep the stored value for it."""
    stored = {loc: p["value"] for loc, p in _walk_parameters(old) if p.get("secret") is True}
    for loc, param in _walk_parameters(new):
        if param.get("secret") is True and param.get("value") == SECRET_MASK and loc in stored:
            param["value"] = stored[loc]


# --------------------------------------------------------------------------------------------


def _validation_detail(kind: Kind, exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"]) or "body"
        if error["type"] == "missing":
            problems.append(f"{location} is required")
        else:
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{location}: {message}")
    return f"Invalid {kind.title}: " + "; ".join(problems)


def _names_a_path(location: str) -> bool:
    return location.startswith(("file:", "/", "./", "../", "~")) or "://" in location or \
        location.endswith((".zip", ".tar.gz", ".tgz", ".tar", ".egg", ".whl")) or \
        Path(location).exists()


def _is_archive(data: bytes) -> bool:
    """A zip (egg, wheel) or a tar archive, compressed or not."""
    if data[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return True
    import io
    import tarfile

    try:
        return tarfile.is_tarfile(io.BytesIO(data))
    except Exception:   # a compressed stream that is no tar: a plain file
        return False


def _first_task(status: dict[str, Any]) -> dict[str, Any]:
    """The first task of a stored status document, checked against its schema, as the dict
    that is changed in place (the stored JSON keeps its keys and their order)."""
    RunStatusDocument.model_validate(status)
    return status["status"]["tasks"][0]


def _later(previous: Optional[str]) -> str:
    """Now, but strictly after `previous`, so that `updated` always changes on a write."""
    current = now_timestamp()
    if previous and current <= previous:
        from datetime import datetime, timedelta

        parsed = datetime.strptime(previous, "%Y-%m-%dT%H:%M:%S.%fZ") + timedelta(milliseconds=1)
        current = parsed.strftime("%Y-%m-%dT%H:%M:%S.") + f"{parsed.microsecond // 1000:03d}Z"
    return current


class Registry:
    """Engines, MLInstances, Experiments, runs, Models, Insights and MLServices of one store."""

    def __init__(self, store: Store, home: Home) -> None:
        self.store = store
        self.home = home
        # Where data sets may be (runtime.data_roots); None: anywhere. A server with tokens sets it.
        self.data_roots: Optional[DataRoots] = None

    @classmethod
    def open(cls, home: Home) -> "Registry":
        registry = cls(open_store(home.store_url), home)
        # Configured roots (MLRUNTIME_DATA_ROOTS) apply to every face; `run serve` may add defaults.
        registry.data_roots = data_roots_for(home.root, shared=False)
        return registry

    def close(self) -> None:
        self.store.close()

    @property
    def store_url(self) -> str:
        return self.store.url

    def transaction(self) -> AbstractContextManager[None]:
        """Every write inside (through this registry or its schedules) commits together or not
        at all; nested use joins the outer one."""
        return self.store.transaction()

    @property
    def ledger(self) -> "RunLedger":
        """The run ledger (runtime.supervisor): who owns each live run, the queue, the grants."""
        return RunLedger(self.store)

    @property
    def schedules(self) -> "Schedules":
        """The scheduler's schedules, MLService states and leases of this registry's store."""
        return Schedules(self.store)

    def runs_index(self) -> "RunIndex":
        """The runs view's index (runs table, values, metric series) of this registry's store."""
        return RunIndex(self.store)

    # -- generic operations -------------------------------------------------------------------

    def find(self, kind: Kind, scope: Scope, id: str, *,
             deleted: bool = False) -> Optional[dict[str, Any]]:
        """The stored document (secrets in clear: for the service modules and the execution
        layer), or None when it is not in this scope or, unless `deleted`, was deleted."""
        doc = self.store.get(kind, scope, id) if id else None
        if doc is None or (doc.get("deleted") and not deleted):
            return None
        return doc

    def live_ids(self, kind: Kind, scope: Scope, field: str, values: list[str]) -> list[str]:
        """Ids of the live objects of `kind` whose `field` is one of `values`."""
        return self.store.live_ids(kind, scope, field, values)

    def _validate(self, kind: Kind, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise BadRequest(f"The {kind.title} body must be a JSON object, got {type(body).__name__}")
        try:
            model: BaseModel = kind.schema.model_validate(body)
        except ValidationError as exc:
            raise ValidationFailed(_validation_detail(kind, exc)) from None
        data = model.model_dump(mode="json", exclude_none=True, by_alias=True)
        for name in _SERVER_FIELDS:
            data.pop(name, None)
        return data

    def validated(self, kind: Kind, body: Any) -> dict[str, Any]:
        """`body` as it would be stored (canonical task names, string values), or an error."""
        return self._validate(kind, body)

    def _live(self, kind: Kind, scope: Scope, id: str) -> dict[str, Any]:
        doc = self.store.get(kind, scope, id)
        if doc is None or doc.get("deleted"):
            raise NotFound(f"{kind.title} {id!r} not found")
        return doc

    def _check_parent(self, kind: Kind, scope: Scope, data: dict[str, Any]) -> None:
        if kind.parent is None:
            return
        field, parent_name = kind.parent
        parent = KINDS[parent_name]
        value = data.get(field)
        doc = self.store.get(parent, scope, value) if value else None
        if doc is None or doc.get("deleted"):
            raise ValidationFailed(
                f"{field} {value!r} does not name an existing {parent.title} in this sandbox")

    def create(self, kind: Kind, caller: Caller, body: Any) -> dict[str, Any]:
        data = self._validate(kind, body)
        self._check_data_sets(kind, caller, data)
        return self._insert(kind, caller, data)

    def _check_data_sets(self, kind: Kind, caller: Caller, data: dict[str, Any]) -> None:
        """Data sets an MLInstance, an Experiment's template or an MLService names are checked
        against the data roots when they are written (403), not only when a run starts."""
        if self.data_roots is None:
            return
        catalog = self.dataset_lookup(caller)
        if kind is MLSERVICE:
            self.data_roots.check_values(data, catalog=catalog)
        self.data_roots.check_tasks(data.get("tasks"), catalog=catalog)
        self.data_roots.check_tasks((data.get("template") or {}).get("tasks"), catalog=catalog)

    def _check_engine_location(self, data: dict[str, Any]) -> None:
        """With data roots, an Engine's recipe named by a server path (not uploaded) must lie under
        them, or in this home's recipe store: a token holder may not import any folder the server
        can read."""
        if self.data_roots is None:
            return
        location = engine_image(data).location
        if not isinstance(location, str) or not _names_a_path(location.strip()):
            return   # an installed plugin or a module:Class
        local = local_path(location.strip())
        store = os.path.realpath(self.home.root / "recipes")
        if local is not None and os.path.realpath(local).startswith(store + os.sep):
            return
        self.data_roots.check("artifacts.default.image.location", location.strip())

    def check_run_data_sets(self, caller: Caller, values: dict[str, Any]) -> None:
        """Before a run starts: every data set of its resolved values inside the data roots."""
        if self.data_roots is not None:
            self.data_roots.check_values(values, catalog=self.dataset_lookup(caller))

    def dataset_lookup(self, caller: Caller) -> Optional[Callable[[str], Optional[str]]]:
        """The catalog of the caller's sandbox as a look-up for the data roots' check."""
        catalog = self.dataset_catalog(caller.scope)
        return lambda value: (catalog.get(value) or {}).get("uri")

    def _insert(self, kind: Kind, caller: Caller, data: dict[str, Any],
                id: Optional[str] = None) -> dict[str, Any]:
        now = now_timestamp()
        doc: dict[str, Any] = {"id": id or str(uuid.uuid4()), **data, "created": now}
        if kind.has_creator:
            creator = {"userId": caller.user_id}
            if caller.display_name:
                creator["displayName"] = caller.display_name
            doc["createdBy"] = creator
        doc["updated"] = now
        doc["deleted"] = False
        with self.store.transaction():
            self._check_parent(kind, caller.scope, data)
            self.store.insert(kind, caller.scope, doc)
        return mask_secrets(doc)

    def get(self, kind: Kind, caller: Caller, id: str) -> dict[str, Any]:
        return mask_secrets(self._live(kind, caller.scope, id))

    def get_unmasked(self, kind: Kind, caller: Caller, id: str) -> dict[str, Any]:
        """For the execution layer only: secret parameter values in clear."""
        return self._live(kind, caller.scope, id)

    def list(self, kind: Kind, caller: Caller, query: ListQuery) -> Page:
        docs, total = self.store.list(kind, caller.scope, query)
        children = []
        for doc in docs:
            for name in kind.detail_fields:
                doc.pop(name, None)
            children.append(mask_secrets(doc))
        return Page(children, total, query)

    def replace(self, kind: Kind, caller: Caller, id: str, body: Any, *,
                validated: bool = False) -> dict[str, Any]:
        if kind is ENGINE and not validated:
            return self.replace_engine(caller, id, body)
        data = body if validated else self._validate(kind, body)
        self._check_data_sets(kind, caller, data)
        with self.store.transaction():
            old = self._live(kind, caller.scope, id)
            self._check_parent(kind, caller.scope, data)
            doc: dict[str, Any] = {"id": id, **data, "created": old["created"]}
            for name in kind.kept_on_put:
                if name not in data and name in old:
                    doc[name] = old[name]
            if "createdBy" in old:
                doc["createdBy"] = old["createdBy"]
            doc["updated"] = _later(old.get("updated"))
            doc["deleted"] = False
            _restore_secrets(doc, old)
            self.store.replace(kind, caller.scope, doc)
        return mask_secrets(doc)

    def delete(self, kind: Kind, caller: Caller, id: str) -> int:
        """Soft-deletes the object and, down the ownership edges, everything it owns."""
        with self.store.transaction():
            self._live(kind, caller.scope, id)
            return self._cascade(kind, caller.scope, [id], now_timestamp())

    def delete_where(self, kind: Kind, caller: Caller, field: str, value: Optional[str]) -> int:
        """Bulk delete by a parent reference (`DELETE /mlInstances?engineId=`)."""
        assert kind.parent is not None and kind.parent[0] == field
        if not value:
            raise BadRequest(f"The query parameter {field} is required")
        with self.store.transaction():
            self._live(KINDS[kind.parent[1]], caller.scope, value)
            ids = self.store.live_ids(kind, caller.scope, field, [value])
            return self._cascade(kind, caller.scope, ids, now_timestamp())

    def _cascade(self, kind: Kind, scope: Scope, ids: list[str], now: str) -> int:
        count = self.store.soft_delete(kind, scope, ids, now)
        for child_name, field in CHILDREN.get(kind.name, ()):
            child = KINDS[child_name]
            child_ids = self.store.live_ids(child, scope, field, ids)
            if child_ids:
                count += self._cascade(child, scope, child_ids, now)
        return count

    # -- engines ------------------------------------------------------------------------------

    def create_engine(self, caller: Caller, body: Any,
                      artifacts: Optional[dict[str, bytes]] = None) -> dict[str, Any]:
        """An Engine, with binary artifacts from a multipart upload kept in the home."""
        data = self._validate(ENGINE, body)
        engine_id = str(uuid.uuid4())
        stored = {n: b for n, b in (artifacts or {}).items() if b}
        from .recipes.registration import apply_engine_artifact

        # A recipe is checked and stored (content-addressed, immutable) before anything is written.
        self._check_engine_location(data)
        apply_engine_artifact(data, stored.pop("defaultArtifact", None), self.home)
        if stored:
            folder = self.home.artifacts / "engines" / engine_id
            folder.mkdir(parents=True, exist_ok=True)
            for name, payload in stored.items():
                (folder / name).write_bytes(payload)
        try:
            return self._insert(ENGINE, caller, data, id=engine_id)
        except BaseException:
            shutil.rmtree(self.home.artifacts / "engines" / engine_id, ignore_errors=True)
            raise

    def replace_engine(self, caller: Caller, id: str, body: Any,
                       artifacts: Optional[dict[str, bytes]] = None) -> dict[str, Any]:
        """PUT of an Engine; a new recipe artifact (uploaded, or another location's content) is
        stored beside the old one and makes a new artifactVersion."""
        from .recipes.registration import apply_engine_artifact

        data = self._validate(ENGINE, body)
        old = self._live(ENGINE, caller.scope, id)
        stored = {n: b for n, b in (artifacts or {}).items() if b}
        self._check_engine_location(data)
        apply_engine_artifact(data, stored.pop("defaultArtifact", None), self.home, previous=old)
        if stored:
            folder = self.home.artifacts / "engines" / id
            folder.mkdir(parents=True, exist_ok=True)
            for name, payload in stored.items():
                (folder / name).write_bytes(payload)
        return self.replace(ENGINE, caller, id, data, validated=True)

    def newest(self, kind: Kind, caller: Caller, *equal: tuple[str, Any]) -> Optional[dict[str, Any]]:
        """The newest live object of `kind` whose fields equal the values given, or None."""
        from .listing import Filter

        query = ListQuery(filters=(Filter("deleted", "==", False, "bool"),
                                   *(Filter(f, "==", v, "str") for f, v in equal)),
                          order=(("created", True),), limit=1)
        page = self.list(kind, caller, query)
        return page.children[0] if page.children else None

    def recipe_engine(self, caller: Caller, path: str | Path, *, env_manager: Optional[str] = None,
                      extra_pip: Iterable[str] = (), log: Any = None) -> dict[str, Any]:
        """The Engine of a recipe on disk (`run ... --engine PATH`): the one already holding this
        content; else, for an edited recipe, the next `artifactVersion` of the recipe Engine of
        the same name in this sandbox; else a new Engine. With `env_manager`, the recipe's
        environment is built first (its lines to `log`): a recipe whose build fails registers
        nothing."""
        from .artifacts import store_artifact

        location = str(Path(path).expanduser().resolve())
        info = store_artifact(location, None, self.home)
        if env_manager:
            from .recipes.runs import recipe_python

            recipe_python(info.recipe, info.dir, home=self.home.root, extra_pip=list(extra_pip),
                          log=log, env_manager=env_manager)

        same = self.newest(ENGINE, caller, ("artifacts.default.image.sha256", info.sha256))
        if same:
            return same
        body = {"name": info.recipe.name, "description": f"Recipe {info.recipe.name} from {location}",
                "artifacts": {"default": {"image": {"location": location}}}}
        earlier = self.newest(ENGINE, caller, ("name", info.recipe.name),
                              ("artifacts.default.image.recipeKind", info.recipe.kind))
        if earlier is None:
            return self.create_engine(caller, body)
        kept = {k: earlier[k] for k in ("description", "type", "mlLibrary", "tags")
                if earlier.get(k) is not None}
        return self.replace_engine(caller, earlier["id"], {**kept, **body})

    # -- experiment runs ----------------------------------------------------------------------

    def _run_in(self, caller: Caller, experiment_id: str, run_id: str) -> dict[str, Any]:
        self._live(EXPERIMENT, caller.scope, experiment_id)
        run = self._live(EXPERIMENT_RUN, caller.scope, run_id)
        if run.get("experimentId") != experiment_id:
            raise NotFound(f"Experiment run {run_id!r} not found in experiment {experiment_id!r}")
        return run

    def create_run(self, caller: Caller, experiment_id: str, body: Any) -> dict[str, Any]:
        if isinstance(body, dict) and body.get("experimentId") not in (None, experiment_id):
            raise ValidationFailed(
                f"experimentId {body['experimentId']!r} in the body differs from the path's "
                f"{experiment_id!r}")
        data = self._validate(EXPERIMENT_RUN, body)
        data["mode"] = run_mode(data["mode"])
        data["experimentId"] = experiment_id
        with self.store.transaction():
            run = self._insert(EXPERIMENT_RUN, caller, data)
            self._write_status(caller.scope, run["id"], {
                "id": run["id"], "experimentRunId": run["id"], "name": run["mode"],
                "deleted": False,
                "status": {"tasks": [{"id": str(uuid.uuid4()), "name": run["mode"],
                                      "state": RunStatus.PENDING.value, "tasklogs": [],
                                      "message": "Waiting for a worker"}]},
            })
        return run

    def get_run(self, caller: Caller, experiment_id: str, run_id: str) -> dict[str, Any]:
        return mask_secrets(self._run_in(caller, experiment_id, run_id))

    def list_runs(self, caller: Caller, experiment_id: str, query: ListQuery) -> Page:
        from dataclasses import replace

        from .listing import Filter

        self._live(EXPERIMENT, caller.scope, experiment_id)
        scoped = replace(query, filters=(*query.filters,
                                         Filter("experimentId", "==", experiment_id, "str")))
        return self.list(EXPERIMENT_RUN, caller, scoped)

    def run_status(self, caller: Caller, experiment_id: str, run_id: str) -> dict[str, Any]:
        self._run_in(caller, experiment_id, run_id)
        status = self.store.get_run_status(caller.scope, run_id)
        if status is None:
            raise NotFound(f"Experiment run {run_id!r} has no status")
        return status

    def status_document(self, scope: Scope, run_id: str) -> Optional[RunStatusDocument]:
        """A run's status document, typed (None when the run has none in this scope)."""
        status = self.store.get_run_status(scope, run_id)
        return None if status is None else RunStatusDocument.model_validate(status)

    def run_state(self, scope: Scope, run_id: str) -> Optional[RunStatus]:
        """A run's state (None when the run has no status in this scope)."""
        status = self.status_document(scope, run_id)
        return None if status is None else status.state

    def require_status(self, caller: Caller, run_id: str) -> RunStatusDocument:
        """A run's status document in the caller's sandbox, or NotFound."""
        status = self.status_document(caller.scope, run_id)
        if status is None:
            raise NotFound(f"Experiment run {run_id!r} has no status")
        return status

    def abort_unowned_run(self, caller: Caller, run_id: str, reason: str) -> dict[str, Any]:
        """ABORTED for a live run no process owns (nothing to stop); a Conflict once it ended."""
        state = self.run_state(caller.scope, run_id)
        if state is None or state.is_terminal():
            raise Conflict(f"Experiment run {run_id} already ended "
                           f"{state.value if state else ''}; there is nothing to cancel")
        return self.transition_run(caller.scope, run_id, RunStatus.ABORTED, message=reason)

    def set_tags(self, kind: Kind, scope: Scope, id: str, tags: dict[str, str]) -> None:
        """Replaces the tags of a live object (server bookkeeping: `updated` stays)."""
        with self.store.transaction():
            doc = self.find(kind, scope, id)
            if doc is not None and tags != (doc.get("tags") or {}):
                self.store.replace(kind, scope, {**doc, "tags": tags})

    def _write_status(self, scope: Scope, run_id: str, status: dict[str, Any]) -> None:
        state = RunStatusDocument.model_validate(status).state
        self.store.put_run_status(scope, run_id, state.value, status)

    def annotate_run(self, scope: Scope, run_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Adds server-owned fields (the resolved configuration, the result) to a run."""
        with self.store.transaction():
            run = self._live(EXPERIMENT_RUN, scope, run_id)
            run.update(fields)
            run["updated"] = _later(run.get("updated"))
            self.store.replace(EXPERIMENT_RUN, scope, run)
        return run

    def run_log(self, caller: Caller, experiment_id: str, run_id: str, name: str) -> Path:
        """A log file of a run, as named in its status document's tasklogs."""
        self._run_in(caller, experiment_id, run_id)
        status = self.status_document(caller.scope, run_id)
        listed = status.log_names if status is not None else set()
        run_dir = self.home.runs / run_id
        path = run_dir / Path(name).name
        # The run's own log only: listed, a plain file (no link out of the folder) in its folder.
        if (name not in listed or name != path.name or not path.suffix == ".log"
                or path.is_symlink() or not path.is_file() or path.stat().st_nlink != 1
                or path.resolve().parent != run_dir.resolve()):
            raise NotFound(f"Experiment run {run_id!r} has no log {name!r}")
        return path

    def run_secrets(self, scope: Scope, run_id: str) -> Redactor:
        """Masks the secret parameter values of a run, its Experiment, MLInstance and Engine."""
        run = self.store.get(EXPERIMENT_RUN, scope, run_id)
        experiment = run and self.store.get(EXPERIMENT, scope, run.get("experimentId") or "")
        instance = experiment and self.store.get(MLINSTANCE, scope,
                                                 experiment.get("mlInstanceId") or "")
        engine = instance and self.store.get(ENGINE, scope, instance.get("engineId") or "")
        return Redactor(str(param.get("value")) for doc in (run, experiment, instance, engine)
                        if doc for _, param in _walk_parameters(doc)
                        if param.get("secret") is True)

    def note_run(self, scope: Scope, run_id: str, message: str) -> None:
        """A new status message for a run that stays in its state (e.g. still queued)."""
        with self.store.transaction():
            status = self.store.get_run_status(scope, run_id)
            if status is None:
                raise NotFound(f"Experiment run {run_id!r} not found")
            task = _first_task(status)
            if not RunStatus(task["state"]).is_terminal():
                task["message"] = message
                self._write_status(scope, run_id, status)

    def transition_run(self, scope: Scope, run_id: str, state: RunStatus, *,
                       message: Optional[str] = None, logs: Optional[str] = None,
                       tasklogs: Optional[list[dict[str, str]]] = None,
                       scrub: bool = True) -> dict[str, Any]:
        """The one place a run changes state; refuses a transition the state machine forbids.
        `scrub=False` is for a message the runtime wrote itself, quoting no value (reconciling a
        thousand stale runs at start-up need not read four documents per run to scrub it)."""
        with self.store.transaction():
            status = self.store.get_run_status(scope, run_id)
            if status is None:
                raise NotFound(f"Experiment run {run_id!r} not found")
            task = _first_task(status)
            current = RunStatus(task["state"])
            if state not in RUN_TRANSITIONS[current]:
                raise Conflict(f"Experiment run {run_id} cannot go from {current.value} to "
                               f"{state.value}")
            now = now_timestamp()
            task["state"] = state.value
            if state is RunStatus.RUNNING and "started" not in task:
                task["started"] = now
            if state.is_terminal():
                task["ended"] = now
            if scrub and (message is not None or logs is not None):   # may quote a secret value
                scrub = self.run_secrets(scope, run_id)
                message = None if message is None else scrub.text(message)
                logs = None if logs is None else scrub.text(logs)
            if message is not None:
                task["message"] = message
            if tasklogs is not None:
                task["tasklogs"] = tasklogs
            if logs is not None:
                task["logs"] = logs
            self._write_status(scope, run_id, status)
            if state.is_terminal():   # an ended run holds no place in the queue, no capacity
                self.store.ledger_delete([run_id])
        return status

    # -- models -------------------------------------------------------------------------------

    def create_model(self, caller: Caller, body: Any, artifact: Optional[bytes] = None,
                     artifact_name: str = "artifact") -> dict[str, Any]:
        data = self._validate(MODEL, body)
        model_id = str(uuid.uuid4())
        if artifact:
            folder = self.home.artifacts / "models" / model_id
            if _is_archive(artifact):
                from .artifacts import safe_extract

                # A model folder packed as zip/tar: unpacked only if every entry stays inside (400
                # naming the entry otherwise), so that it can be scored like a trained one.
                safe_extract(artifact, folder)
                data["modelArtifactUri"] = folder.as_uri()
            else:
                folder.mkdir(parents=True, exist_ok=True)
                target = folder / (Path(artifact_name).name or "artifact")
                target.write_bytes(artifact)
                data["modelArtifactUri"] = target.as_uri()
        with self.store.transaction():
            run = self.store.get(EXPERIMENT_RUN, caller.scope, data["experimentRunId"])
            if run is not None:
                data.setdefault("experimentId", run.get("experimentId"))
            try:
                return self._insert(MODEL, caller, data, id=model_id)
            except BaseException:
                shutil.rmtree(self.home.artifacts / "models" / model_id, ignore_errors=True)
                raise

    def register_model(self, caller: Caller, body: dict[str, Any], model_dir: Path,
                       digest: Optional[str] = None) -> dict[str, Any]:
        """A Model for a trained run; its folder moves into the home's model artifacts. `digest`
        (recipes' pickled models) is server-owned: only a Model registered here carries one."""
        data = self._validate(MODEL, body)
        if digest:
            data["modelArtifactDigest"] = digest
        model_id = str(uuid.uuid4())
        target = self.home.artifacts / "models" / model_id
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(model_dir), target)
        data["modelArtifactUri"] = target.as_uri()
        try:
            return self._insert(MODEL, caller, data, id=model_id)
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise

    def model_artifact_dir(self, caller: Caller, model_id: str) -> Path:
        """The local file or folder a Model's artifact lives in."""
        doc = self._live(MODEL, caller.scope, model_id)
        uri = doc.get("modelArtifactUri")
        parsed = urlparse(uri) if uri else None
        if not parsed or parsed.scheme not in ("file", ""):
            raise NotFound(f"Model {model_id!r} has no local artifact")
        path = Path(unquote(parsed.path)).resolve()
        # Only what this runtime stored is served: a client-set URI must not expose other files.
        if not path.is_relative_to(self.home.artifacts.resolve() / "models"):
            raise NotFound(f"Model {model_id!r} has no artifact stored by this runtime "
                           f"(modelArtifactUri {uri!r})")
        if not path.exists():
            raise NotFound(f"The artifact of Model {model_id!r} is missing at {path}")
        return path

    def model_artifact(self, caller: Caller, model_id: str) -> Path:
        """The file of a Model's artifact (a folder artifact is zipped once, beside it)."""
        path = self.model_artifact_dir(caller, model_id)
        if path.is_dir():
            archive = path.with_suffix(".zip")
            if not archive.exists():
                shutil.make_archive(str(path), "zip", root_dir=path)
            path = archive
        if not path.is_file():
            raise NotFound(f"The artifact of Model {model_id!r} is missing at {path}")
        return path

    # -- the data set catalog (runtime.datasets) ------------------------------------------------

    def add_dataset(self, caller: Caller, dataset_id: str, location: str,
                    file_format: Optional[str] = None, *, replace: bool = False) -> dict[str, Any]:
        """Register `location` (a path or file:// URI, made absolute) as `dataset_id` in the
        caller's sandbox. An id already registered is a Conflict unless `replace`; a location
        outside the data roots is refused. The location need not exist yet (an output data set)."""
        from .datasets import entry_for

        entry = entry_for(dataset_id, location, file_format, created=now_timestamp())
        if self.data_roots is not None:
            self.data_roots.check("location", entry.uri)
        if not self.store.dataset_put(caller.scope, entry.to_dict(), replace=replace):
            raise Conflict(f"Data set {dataset_id!r} is already registered in sandbox "
                           f"{caller.scope.sandbox!r}: remove it first, or use --replace")
        return self._dataset_view(entry.to_dict())

    def list_datasets(self, caller: Caller) -> list[dict[str, Any]]:
        return [self._dataset_view(doc) for doc in self.store.dataset_list(caller.scope)]

    def remove_dataset(self, caller: Caller, dataset_id: str) -> None:
        """Forget a registered id (the files stay where they are)."""
        if not self.store.dataset_delete(caller.scope, dataset_id):
            known = ", ".join(d["id"] for d in self.store.dataset_list(caller.scope)) or "none"
            raise NotFound(f"Data set {dataset_id!r} is not registered in sandbox "
                           f"{caller.scope.sandbox!r} (registered: {known})")

    def dataset_catalog(self, scope: Scope) -> dict[str, dict[str, Any]]:
        """The sandbox's catalog as the worker receives it (WorkerSpec.datasets): id -> entry."""
        return {doc["id"]: doc for doc in self.store.dataset_list(scope)}

    @staticmethod
    def _dataset_view(doc: dict[str, Any]) -> dict[str, Any]:
        from .locations import local_path as _uri_path

        path = _uri_path(doc["uri"])
        return {**doc, "path": str(path) if path else None,
                "exists": bool(path and path.exists())}

    # -- insights -----------------------------------------------------------------------------

    @staticmethod
    def default_metrics(algorithm: Optional[str]) -> dict[str, Any]:
        if algorithm:
            match = {k: v for k, v in DEFAULT_METRICS.items() if k.lower() == algorithm.lower()}
            if not match:
                raise NotFound(f"Unknown algorithm {algorithm!r}; known: "
                               + ", ".join(DEFAULT_METRICS))
        else:
            match = DEFAULT_METRICS
        return {"children": [{"algorithm": k, "defaultMetrics": v} for k, v in match.items()]}


# --------------------------------------------------------------------------------------------
# The scheduler's records and the runs view's index: what runtime.scheduler, runtime.mlservices
# and runtime.run_views need of the store, so that only this layer talks to it.


class RunLedger:
    """One row per live run: its owner process, its place in the FIFO queue (phase queued or
    running), what it was granted and its worker. A store that keeps none cannot supervise runs."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def rows(self) -> list[dict[str, Any]]:
        """Every row, in queue order."""
        return self._store.ledger_rows()

    def get(self, run_id: str) -> Optional[dict[str, Any]]:
        return self._store.ledger_get(run_id)

    def put(self, scope: Scope, run_id: str, phase: str, fields: dict[str, Any]) -> None:
        """Sets the run's phase and merges `fields` into its row (created when missing)."""
        self._store.ledger_put(scope, run_id, phase, fields)

    def delete(self, run_ids: list[str]) -> int:
        return self._store.ledger_delete(run_ids)

    def live_run_states(self) -> list[tuple[str, str, str, str]]:
        """(run id, org, sandbox, state) of every run not yet ended, across sandboxes."""
        return self._store.live_run_states()

    def data_version(self) -> int:
        """Changes when another connection commits (a cheap "anything new?" for pollers)."""
        return self._store.data_version()


class Schedules:
    """Schedule rows (one per timed task of an MLService or an Experiment template), MLService
    states and the scheduler's lease."""

    def __init__(self, store: Store) -> None:
        self._store = store

    # -- schedule rows --------------------------------------------------------------------------

    def fingerprint(self) -> tuple:
        """Changes whenever an MLService or an Experiment is created, replaced or deleted."""
        return self._store.schedule_fingerprint()

    def scheduled_documents(self) -> list[tuple[Scope, str, dict[str, Any]]]:
        """(scope, kind name, document) of every live document that defines schedules."""
        return self._store.scheduled_documents()

    def rows(self, scope: Optional[Scope] = None,
             owner_id: Optional[str] = None) -> list[dict[str, Any]]:
        return self._store.schedule_rows(scope, owner_id)

    def rows_by_task(self, scope: Scope, owner_id: str) -> dict[str, dict[str, Any]]:
        """The schedule rows of one owner, by task (train, score)."""
        return {row["task"]: row for row in self._store.schedule_rows(scope, owner_id)}

    def due(self, now: str, limit: int) -> list[dict[str, Any]]:
        return self._store.schedule_due(now, limit)

    def next_fire(self) -> Optional[str]:
        return self._store.schedule_next_fire()

    def put(self, scope: Scope, row: dict[str, Any]) -> None:
        self._store.schedule_put(scope, row)

    def advance(self, schedule_id: str, expected_next: Optional[str], **fields: Any) -> bool:
        """Moves a row's next fire on, only if it still is `expected_next` (the claim of a fire)."""
        return self._store.schedule_advance(schedule_id, expected_next, **fields)

    def update(self, schedule_id: str, **fields: Any) -> None:
        self._store.schedule_update(schedule_id, **fields)

    def delete(self, ids: list[str]) -> int:
        return self._store.schedule_delete(ids)

    # -- MLService states -------------------------------------------------------------------------

    def service_state(self, scope: Scope, service_id: str) -> dict[str, Any]:
        return self._store.service_state(scope, service_id)

    def put_service_state(self, scope: Scope, service_id: str, state: dict[str, Any]) -> None:
        self._store.service_state_put(scope, service_id, state)

    def update_service_state(self, scope: Scope, service_id: str, **fields: Any) -> dict[str, Any]:
        """The service's state with `fields` set, read and written in one transaction."""
        with self._store.transaction():
            state = {**self._store.service_state(scope, service_id), **fields}
            self._store.service_state_put(scope, service_id, state)
        return state

    def services_awaiting(self) -> list[tuple[Scope, str, dict[str, Any]]]:
        """(scope, service id, state) of the services with training runs awaiting publication."""
        return self._store.service_states_waiting()

    # -- the scheduler's lease ----------------------------------------------------------------------

    def lease_acquire(self, name: str, holder: str, ttl_s: float, now_s: float) -> bool:
        return self._store.lease_acquire(name, holder, ttl_s, now_s)

    def lease_take(self, name: str, old_holder: str, holder: str, ttl_s: float,
                   now_s: float) -> bool:
        return self._store.lease_take(name, old_holder, holder, ttl_s, now_s)

    def lease_release(self, name: str, holder: str) -> None:
        self._store.lease_release(name, holder)

    def lease_holder(self, name: str) -> Optional[tuple[str, float]]:
        return self._store.lease_holder(name)


class RunIndex:
    """The runs view's tables (store/sqlite_runs.py): the runs table, per-run values and metric
    series, kept by the SQLite store's triggers. Another store has no runs view."""

    def __init__(self, store: Store) -> None:
        from .errors import StoreError
        from .store.sqlite import SQLiteStore

        if not isinstance(store, SQLiteStore):
            raise StoreError("The runs view needs the SQLite store")
        self._store = store

    @staticmethod
    def filter_columns() -> tuple[str, ...]:
        from .store.sqlite_runs import FILTER_COLUMNS

        return tuple(FILTER_COLUMNS)

    def _sql(self) -> tuple[Any, Any]:
        from .store import sqlite_runs

        return sqlite_runs, self._store._conn()

    def add_points(self, run_id: str, read: Callable[[int], tuple[list[dict[str, Any]], int]]
                   ) -> int:
        """Appends a run's new metric points: `read(offset)` gives the points after the offset
        already read and the new offset; one transaction, safe from any process."""
        sql, _ = self._sql()
        with self._store.transaction():
            conn = self._store._conn()
            offset = sql.read_offset(conn, run_id)
            points, new_offset = read(offset)
            if new_offset != offset:
                sql.add_points(conn, run_id, points, new_offset)
        return len(points)

    def series(self, run_ids: list[str]) -> dict[str, Any]:
        sql, conn = self._sql()
        return sql.series(conn, run_ids)

    def table_page(self, scope: Scope, filters: dict[str, str], kind: Optional[str], key: str,
                   descending: bool, start: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        sql, conn = self._sql()
        return sql.table_page(conn, scope.org, scope.sandbox, filters, kind, key, descending,
                              start, limit)

    def values_of(self, run_ids: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
        sql, conn = self._sql()
        return sql.values_of(conn, run_ids)

    def names_of(self, table: str, ids: Iterable[Optional[str]]) -> dict[str, str]:
        sql, conn = self._sql()
        return sql.names_of(conn, table, ids)

    def owners_of(self, run_id: str) -> tuple[Optional[str], Optional[str]]:
        """(Engine id, MLInstance id) of a run, from its index row."""
        _, conn = self._sql()
        return conn.execute("SELECT engineId, mlInstanceId FROM runIndex WHERE id = ?",
                            (run_id,)).fetchone() or (None, None)

    def scopes_in_use(self) -> list[dict[str, Any]]:
        sql, conn = self._sql()
        return sql.scopes_in_use(conn)

    def scope_choices(self, scope: Scope) -> dict[str, list[dict[str, str]]]:
        sql, conn = self._sql()
        return sql.scope_choices(conn, scope.org, scope.sandbox)

    def value_keys(self, scope: Scope) -> dict[str, list[str]]:
        sql, conn = self._sql()
        return sql.value_keys(conn, scope.org, scope.sandbox)
