"""Listing queries shared by every collection: `start`, `limit`, `orderby` and `property`.

Parsing is pure: query-string values in, a typed `ListQuery` out, or a `BadRequest` that names the
offending field or value. The store turns a `ListQuery` into SQL.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Optional

from .errors import BadRequest
from .schemas import FieldType, Kind, normalize_timestamp

DEFAULT_LIMIT = 25
MAX_LIMIT = 100
DEFAULT_ORDERBY = "created"
DEFAULT_PROPERTY = "deleted==false"

# Longest operators first so that `<=` is not read as `<`.
_EXPRESSION = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(==|!=|<=|>=|<|>)(.*)$", re.S)
_ORDERED_OPS = {"<", "<=", ">", ">="}


@dataclass(frozen=True)
class Filter:
    field: str
    op: str
    value: Any
    type: FieldType


@dataclass(frozen=True)
class ListQuery:
    filters: tuple[Filter, ...] = ()
    order: tuple[tuple[str, bool], ...] = (("created", False),)   # (field, descending)
    start: int = 0
    limit: int = DEFAULT_LIMIT
    orderby_text: str = DEFAULT_ORDERBY
    property_text: str = DEFAULT_PROPERTY


def _typed_value(name: str, ftype: FieldType, op: str, raw: str) -> Any:
    text = raw.strip()
    if ftype == "bool":
        if text.lower() not in ("true", "false"):
            raise BadRequest(f"property {name!r} is a boolean: expected true or false, got {raw!r}")
        if op in _ORDERED_OPS:
            raise BadRequest(f"property {name!r} is a boolean: only == and != apply")
        return text.lower() == "true"
    if ftype == "number":
        try:
            return float(text)
        except ValueError:
            raise BadRequest(f"property {name!r} is a number, got {raw!r}") from None
    if ftype == "timestamp":
        try:
            return normalize_timestamp(text)
        except ValueError:
            raise BadRequest(
                f"property {name!r} is a timestamp: expected ISO-8601 such as "
                f"2019-01-01T00:00:00.000Z, got {raw!r}") from None
    if op in _ORDERED_OPS:
        raise BadRequest(
            f"property {name!r} is text: < <= > >= apply only to numbers and timestamps")
    return text


def _unknown_field(kind: Kind, name: str, what: str) -> BadRequest:
    known = ", ".join(sorted(kind.fields))
    return BadRequest(f"Unknown field {name!r} in {what} for {kind.collection}; known fields: {known}")


def parse_property(kind: Kind, text: Optional[str]) -> tuple[tuple[Filter, ...], str]:
    """Comma-separated expressions; `deleted==false` is added unless the query names `deleted`."""
    expressions = [e for e in (text or "").split(",") if e.strip()]
    filters = []
    for expression in expressions:
        match = _EXPRESSION.match(expression)
        if not match:
            raise BadRequest(
                f"Malformed property expression {expression!r}: expected FIELD==VALUE, FIELD!=VALUE, "
                "or FIELD<VALUE, <=, >, >= for numbers and timestamps")
        name, op, raw = match.groups()
        ftype = kind.fields.get(name)
        if ftype is None:
            raise _unknown_field(kind, name, "property")
        filters.append(Filter(name, op, _typed_value(name, ftype, op, raw), ftype))
    if not any(f.field == "deleted" for f in filters):
        filters.insert(0, Filter("deleted", "==", False, "bool"))
    effective = ",".join(f"{f.field}{f.op}{_display(f.value)}" for f in filters)
    return tuple(filters), effective


def _display(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def parse_orderby(kind: Kind, text: Optional[str]) -> tuple[tuple[tuple[str, bool], ...], str]:
    text = text if text and text.strip() else DEFAULT_ORDERBY
    order = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        descending = item.startswith("-")
        name = item.lstrip("+-").strip()
        if name not in kind.fields:
            raise _unknown_field(kind, name, "orderby")
        order.append((name, descending))
    if not order:
        raise BadRequest(f"orderby {text!r} names no field")
    return tuple(order), ",".join(("-" if d else "") + n for n, d in order)


def parse_int(name: str, raw: Optional[str], default: int, low: int, high: Optional[int]) -> int:
    if raw is None or raw == "":
        return default
    # ASCII digits only: int() would also take "+1", "1_0" and other scripts' digits
    if not re.fullmatch(r"[0-9]{1,12}", raw):
        raise BadRequest(f"{name} must be a whole number, got {raw!r}")
    value = int(raw)
    if value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f"{low} or more"
        raise BadRequest(f"{name} must be {bound}, got {value}")
    return value


def parse_list_query(kind: Kind, params: dict[str, str]) -> ListQuery:
    """A `ListQuery` from a collection request's query parameters."""
    filters, property_text = parse_property(kind, params.get("property"))
    order, orderby_text = parse_orderby(kind, params.get("orderby"))
    return ListQuery(
        filters=filters, order=order,
        start=parse_int("start", params.get("start"), 0, 0, None),
        # limit=0 (the contract allows 0..100) lists no children: `_page.totalCount` alone.
        limit=parse_int("limit", params.get("limit"), DEFAULT_LIMIT, 0, MAX_LIMIT),
        orderby_text=orderby_text, property_text=property_text)
