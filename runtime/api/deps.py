"""What the API's routes share: the server's settings, the app's handles (registry, run executor),
who is asking (the caller, from the auth headers), reading bodies, and writing the contract's JSON
shapes and its problem body `{type, title, status, detail}`.

The handles live on `app.state`, set once by `app.create_app`, and are read from the request
(`deps.registry(request)`), so no route and no page imports the app.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import urlencode

from fastapi import Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import Response

from ..errors import (BadRequest, MLRuntimeError, NotAcceptable, PayloadTooLarge,
                      UnsupportedMediaType)
from ..home import Home
from ..registry import Caller, Page, Registry
from ..request_bodies import read_limited
from ..schemas import Kind
from .auth import authenticate

if TYPE_CHECKING:
    from ..runs import RunExecutor

BASE = "/data/sensei"
SENSEI_JSON = "application/vnd.adobe.platform.sensei+json"
_JSON_TYPES = ("application/json", SENSEI_JSON)
# The binary parts the contract names beside each multipart entity part.
_FILE_PARTS = {
    "engine": ("defaultArtifact", "preprocessOverrideArtifact", "featurePipelineOverrideArtifact",
               "trainOverrideArtifact", "batchScoreOverrideArtifact", "validateOverrideArtifact",
               "evaluateOverrideArtifact", "publishOverrideArtifact"),
    "model": ("modelArtifact",),
}
_ACCEPTABLE = ("*/*", "application/*", "application/json", SENSEI_JSON, "application/octet-stream",
               "text/*", "text/plain")   # artifacts are bytes, run logs are text


@dataclass
class ServerSettings:
    home: Home
    tokens: dict[str, Any] = field(default_factory=dict)   # bearer token -> user id | TokenGrant
    max_body_bytes: int = 1 << 20            # JSON bodies
    max_upload_bytes: int = 512 << 20        # multipart uploads (engine and model artifacts)
    execute_runs: bool = True                # POST .../runs executes runs in the background
    backend_options: dict[str, dict[str, Any]] = field(default_factory=dict)   # per backend name
    run_backend: Optional[str] = None        # the backend of those runs (e.g. "ray"); None: planned
    grace_s: float = 30.0                    # on stop: how long running runs may still finish
    max_concurrent_runs: Optional[int] = None   # None: the host's CPU slots, GPUs and memory cap it
    reconcile_runs: bool = True              # at start: settle runs of a dead server or CLI
    # --data-root folders (else MLRUNTIME_DATA_ROOTS; with tokens and neither: HOME/data)
    data_roots: list[str] = field(default_factory=list)
    warm: Optional[str] = None               # "cold": no warm parents (runtime.warm); None: used
    # MLServices' and Experiments' schedules fire runs (runtime.scheduler); MLRUNTIME_SCHEDULER=off
    schedule_runs: bool = field(default_factory=lambda: os.environ.get(
        "MLRUNTIME_SCHEDULER", "").strip().lower() not in ("off", "0", "false", "no"))


# -- the app's handles and the caller --------------------------------------------------------
# Plain calls, the first lines of a route, rather than FastAPI's `Depends`: resolving two
# dependencies cost GET-by-id about a quarter more CPU per request.

def settings(request: Request) -> ServerSettings:
    return request.app.state.settings


def registry(request: Request) -> Registry:
    return request.app.state.registry


def executor(request: Request) -> Optional["RunExecutor"]:
    """None with `--no-execute`: runs are created, never started."""
    return request.app.state.executor


def authenticated(request: Request, headers: Any = None) -> Caller:
    """Who asks, from the bearer token and the org and sandbox headers (see auth.py); `headers`
    replaces the request's own, to ask whether the token reaches another scope."""
    state = request.app.state
    return authenticate(state.settings.tokens, request.headers if headers is None else headers,
                        request.client.host if request.client else None, state.local_user)


def check_accept(request: Request) -> None:
    accept = request.headers.get("accept")
    if not accept:
        return
    for part in accept.split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media in _ACCEPTABLE or media.endswith("+json"):
            return
    raise NotAcceptable(f"Cannot answer with {accept!r}: this API answers JSON "
                        f"({SENSEI_JSON};profile=...)")


def caller(request: Request) -> Caller:
    """The caller, first thing in every route; also refuses an unacceptable `Accept`.
    Authentication comes first: without a valid token every route is a 401."""
    found = authenticated(request)
    check_accept(request)
    return found


# -- reading requests ------------------------------------------------------------------------

def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


async def read_raw(request: Request, limit: int) -> bytes:
    return await read_limited(request, limit)


async def json_body(request: Request) -> Any:
    """The JSON body. Like the platform, a body needs a JSON Content-Type: anything else
    (none, or curl's `-d` default, form encoding) is a 415 that names the header to add."""
    media = media_type(request)
    if media not in _JSON_TYPES:
        shown = request.headers.get("content-type") or "none"
        raise UnsupportedMediaType(
            f"Unsupported content type {shown!r}: send the header 'Content-Type: "
            "application/json' (curl: -H 'Content-Type: application/json'; -d alone sends "
            f"form encoding) or '{SENSEI_JSON};profile=...'")
    raw = await read_raw(request, settings(request).max_body_bytes)
    if not raw.strip():
        raise BadRequest("The request body is empty: a JSON object is required")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"Malformed JSON body: {exc}") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


async def multipart(request: Request, entity_part: str) -> tuple[Any, dict[str, bytes]]:
    """The JSON entity part and the binary parts of a multipart/form-data request."""
    length = request.headers.get("content-length")
    limit = settings(request).max_upload_bytes
    if length and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"The upload of {int(length)} bytes is over the limit of "
                              f"{limit} bytes")
    try:
        form = await request.form(max_part_size=limit)
    except Exception as exc:  # starlette raises its own parser errors
        raise BadRequest(f"Malformed multipart body: {exc}") from None
    entity: Any = None
    files: dict[str, bytes] = {}
    allowed = _FILE_PARTS[entity_part]
    for name, value in form.multi_items():
        if name != entity_part and name not in allowed:
            # a part name becomes a file name: only the contract's names, never a path
            raise BadRequest(f"Unknown multipart part {name!r}: expected {entity_part!r} "
                             f"and optionally {', '.join(repr(a) for a in allowed)}")
        payload = await value.read() if isinstance(value, UploadFile) else value.encode()
        if name == entity_part:
            try:
                entity = json.loads(payload)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise BadRequest(f"Malformed JSON in the {entity_part!r} part: {exc}") from None
        elif payload:
            files[name] = payload
    if entity is None:
        raise BadRequest(f"The multipart body has no {entity_part!r} part")
    return entity, files


async def entity_and_files(request: Request, entity_part: str) -> tuple[Any, dict[str, bytes]]:
    """A JSON body, or a multipart body with the entity part and its files."""
    if media_type(request) == "multipart/form-data":
        return await multipart(request, entity_part)
    return await json_body(request), {}


def list_params(request: Request) -> dict[str, str]:
    """A listing's query parameters; one given twice is a 400 (`orderby` and `property` take
    comma-separated lists, not repeats), never silently the last one."""
    params = request.query_params
    for name in ("start", "limit", "orderby", "property"):
        if len(params.getlist(name)) > 1:
            raise BadRequest(f"The query parameter {name} is given more than once; "
                             "orderby and property take comma-separated lists")
    return dict(params)


# -- writing ---------------------------------------------------------------------------------

async def write(operation: Any, *args: Any) -> Any:
    """Runs a registry write on a worker thread: a write may wait for SQLite's lock (another
    process, such as a CLI, writing the same file), and the event loop must keep serving."""
    return await run_in_threadpool(operation, *args)


def json_response(doc: Any, profile: str, status: int = 200,
                  headers: Optional[dict[str, str]] = None) -> Response:
    """A document in the contract's media type with its profile."""
    return Response(json.dumps(doc, separators=(",", ":")).encode(), status_code=status,
                    media_type=f"{SENSEI_JSON};profile={profile}", headers=headers)


def json_text_response(text: str, profile: str) -> Response:
    """`json_response` of a document already written as compact JSON text."""
    return Response(text.encode(), media_type=f"{SENSEI_JSON};profile={profile}")


def success(detail: str) -> Response:
    return json_response({"title": "Success", "status": 200, "detail": detail},
                         "api-response.v1.json")


def location(request: Request, path: str) -> dict[str, str]:
    """The `Location` header of a created object."""
    return {"Location": str(request.base_url).rstrip("/") + path}


def listing(request: Request, kind: Kind, page: Page) -> Response:
    """A page of a listing with the contract's `_page` and `_links` (`next` while more remain)."""
    q = page.query
    base = str(request.url.replace(query=""))
    common = {"limit": q.limit, "orderby": q.orderby_text, "property": q.property_text}
    page_info: dict[str, Any] = {"orderby": q.orderby_text, "property": q.property_text,
                                 "start": str(q.start), "totalCount": page.total,
                                 "count": len(page.children)}
    links: dict[str, Any] = {"self": {"href": f"{base}?{urlencode({'start': q.start, **common})}"}}
    if q.limit and q.start + len(page.children) < page.total:   # limit=0: a count only
        nxt = q.start + q.limit
        page_info["next"] = str(nxt)
        links["next"] = {"href": f"{base}?{urlencode({'start': nxt, **common})}"}
    body = {"children": page.children, "_page": page_info, "_links": links}
    return json_response(body, kind.listing_profile)


def error_response(err: MLRuntimeError) -> Response:
    """Any error, ours or the framework's, as the contract's problem body."""
    return Response(json.dumps(err.to_body()).encode(), status_code=err.status,
                    media_type="application/json")
