"""The rules every registry document follows: validated against its schema, server fields set,
its parent checked, read and listed with secrets masked, replaced, and soft-deleted down the
ownership edges."""
from __future__ import annotations

import json
import uuid
from dataclasses import replace as replaced
from datetime import datetime, timedelta
from typing import Any, Optional

from pydantic import BaseModel, ValidationError

from ..errors import BadRequest, NotFound, ValidationFailed
from ..home import Home
from ..listing import Filter, ListQuery
from ..schemas import CHILDREN, KINDS, Kind, now_timestamp
from ..store import Scope, Store
from .callers import Caller, Page
from .catalog import Catalog
from .masking import mask_secrets, restore_secrets

_SERVER_FIELDS = ("id", "created", "createdBy", "updated", "deleted", "_links",
                  "modelArtifactDigest")


def validation_detail(kind: Kind, exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        location = ".".join(str(part) for part in error["loc"]) or "body"
        if error["type"] == "missing":
            problems.append(f"{location} is required")
        else:
            message = error["msg"].removeprefix("Value error, ")
            problems.append(f"{location}: {message}")
    return f"Invalid {kind.title}: " + "; ".join(problems)


def later(previous: Optional[str]) -> str:
    """Now, but strictly after `previous`, so that `updated` always changes on a write."""
    current = now_timestamp()
    if previous and current <= previous:
        parsed = datetime.strptime(previous, "%Y-%m-%dT%H:%M:%S.%fZ") + timedelta(milliseconds=1)
        current = parsed.strftime("%Y-%m-%dT%H:%M:%S.") + f"{parsed.microsecond // 1000:03d}Z"
    return current


class Documents:
    """Engines, MLInstances, Experiments, runs, Models, Insights and MLServices of one store, as
    documents; the data sets they name are checked against the catalog's data roots."""

    def __init__(self, store: Store, home: Home, catalog: Catalog) -> None:
        self.store = store
        self.home = home
        self.catalog = catalog

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

    def validate(self, kind: Kind, body: Any) -> dict[str, Any]:
        """`body` as it would be stored (canonical task names, string values), or an error."""
        if not isinstance(body, dict):
            raise BadRequest(f"The {kind.title} body must be a JSON object, got {type(body).__name__}")
        try:
            model: BaseModel = kind.schema.model_validate(body)
        except ValidationError as exc:
            raise ValidationFailed(validation_detail(kind, exc)) from None
        data = model.model_dump(mode="json", exclude_none=True, by_alias=True)
        for name in _SERVER_FIELDS:
            data.pop(name, None)
        return data

    def live(self, kind: Kind, scope: Scope, id: str) -> dict[str, Any]:
        """The stored document (secrets in clear), or NotFound when missing or deleted."""
        doc = self.store.get(kind, scope, id)
        if doc is None or doc.get("deleted"):
            raise NotFound(f"{kind.title} {id!r} not found")
        return doc

    def check_parent(self, kind: Kind, scope: Scope, data: dict[str, Any]) -> None:
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
        data = self.validate(kind, body)
        self.catalog.check_data_sets(kind, caller, data)
        return self.insert(kind, caller, data)

    def insert(self, kind: Kind, caller: Caller, data: dict[str, Any],
               id: Optional[str] = None) -> dict[str, Any]:
        """Stores validated `data` as a new document (server fields set, parent checked)."""
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
            self.check_parent(kind, caller.scope, data)
            self.store.insert(kind, caller.scope, doc)
        return mask_secrets(doc)

    def get(self, kind: Kind, caller: Caller, id: str) -> dict[str, Any]:
        return mask_secrets(self.live(kind, caller.scope, id))

    def get_json(self, kind: Kind, caller: Caller, id: str) -> str:
        """`get` as compact JSON text. A store that keeps each document's text (SQLite) hands it
        over as it is when no parameter in it can be secret: no parse, no mask, no dump."""
        read = getattr(self.store, "get_text", None)
        text = read(kind, caller.scope, id) if read is not None else None
        if text is not None and '"secret"' not in text:
            return text
        return json.dumps(self.get(kind, caller, id), separators=(",", ":"))

    def get_unmasked(self, kind: Kind, caller: Caller, id: str) -> dict[str, Any]:
        """For the execution layer only: secret parameter values in clear."""
        return self.live(kind, caller.scope, id)

    def list(self, kind: Kind, caller: Caller, query: ListQuery) -> Page:
        docs, total = self.store.list(kind, caller.scope, query)
        children = []
        for doc in docs:
            for name in kind.detail_fields:
                doc.pop(name, None)
            children.append(mask_secrets(doc))
        return Page(children, total, query)

    def list_where(self, kind: Kind, caller: Caller, query: ListQuery, field: str,
                   value: str) -> Page:
        """`list` narrowed to the documents whose `field` is `value`."""
        return self.list(kind, caller, replaced(
            query, filters=(*query.filters, Filter(field, "==", value, "str"))))

    def newest(self, kind: Kind, caller: Caller, *equal: tuple[str, Any]) -> Optional[dict[str, Any]]:
        """The newest live object of `kind` whose fields equal the values given, or None."""
        query = ListQuery(filters=(Filter("deleted", "==", False, "bool"),
                                   *(Filter(f, "==", v, "str") for f, v in equal)),
                          order=(("created", True),), limit=1)
        page = self.list(kind, caller, query)
        return page.children[0] if page.children else None

    def replace(self, kind: Kind, caller: Caller, id: str, body: Any, *,
                validated: bool = False) -> dict[str, Any]:
        data = body if validated else self.validate(kind, body)
        self.catalog.check_data_sets(kind, caller, data)
        with self.store.transaction():
            old = self.live(kind, caller.scope, id)
            self.check_parent(kind, caller.scope, data)
            doc: dict[str, Any] = {"id": id, **data, "created": old["created"]}
            for name in kind.kept_on_put:
                if name not in data and name in old:
                    doc[name] = old[name]
            if "createdBy" in old:
                doc["createdBy"] = old["createdBy"]
            doc["updated"] = later(old.get("updated"))
            doc["deleted"] = False
            restore_secrets(doc, old)
            self.store.replace(kind, caller.scope, doc)
        return mask_secrets(doc)

    def set_tags(self, kind: Kind, scope: Scope, id: str, tags: dict[str, str]) -> None:
        """Replaces the tags of a live object (server bookkeeping: `updated` stays)."""
        with self.store.transaction():
            doc = self.find(kind, scope, id)
            if doc is not None and tags != (doc.get("tags") or {}):
                self.store.replace(kind, scope, {**doc, "tags": tags})

    def delete(self, kind: Kind, caller: Caller, id: str) -> int:
        """Soft-deletes the object and, down the ownership edges, everything it owns."""
        with self.store.transaction():
            self.live(kind, caller.scope, id)
            return self.cascade(kind, caller.scope, [id], now_timestamp())

    def delete_where(self, kind: Kind, caller: Caller, field: str, value: Optional[str]) -> int:
        """Bulk delete by a parent reference (`DELETE /mlInstances?engineId=`)."""
        assert kind.parent is not None and kind.parent[0] == field
        if not value:
            raise BadRequest(f"The query parameter {field} is required")
        with self.store.transaction():
            self.live(KINDS[kind.parent[1]], caller.scope, value)
            ids = self.store.live_ids(kind, caller.scope, field, [value])
            return self.cascade(kind, caller.scope, ids, now_timestamp())

    def cascade(self, kind: Kind, scope: Scope, ids: list[str], now: str) -> int:
        count = self.store.soft_delete(kind, scope, ids, now)
        for child_name, field in CHILDREN.get(kind.name, ()):
            child = KINDS[child_name]
            child_ids = self.store.live_ids(child, scope, field, ids)
            if child_ids:
                count += self.cascade(child, scope, child_ids, now)
        return count
