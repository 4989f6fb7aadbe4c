"""The OpenAPI contract as test oracle: schema validation, declared statuses and content types.

The reference files live beside the checkout (`../shared/reference/` from the repo root) and are
read in place, never copied. The contract is OpenAPI 3.0, not JSON Schema: it is translated once
(`format: datetime` -> `date-time`, `nullable`, `discriminator` dropped) and validated with a
Draft 4 validator whose format checker really checks the formats it names.
"""
from __future__ import annotations

import copy
import functools
import json
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT4


def repo_root() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    raise RuntimeError(f"No pyproject.toml above {here}")


REFERENCE = repo_root().parent / "shared" / "reference"
OPENAPI_PATH = REFERENCE / "sensei-ml-api.openapi.yaml"
POSTMAN_PATH = REFERENCE / "sensei-ml-api.postman_collection.json"
ENDPOINT_DOC_PATH = REFERENCE / "mlinstances-endpoint.md"

SENSEI_JSON = "application/vnd.adobe.platform.sensei+json"
_DOC_URI = "urn:sensei-ml-api:openapi"


@functools.lru_cache(maxsize=None)
def openapi() -> dict[str, Any]:
    with OPENAPI_PATH.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


# --------------------------------------------------------------------------------------------
# OpenAPI 3.0 schema objects -> JSON Schema (Draft 4 semantics, which OpenAPI 3.0 follows)

_FORMAT_ALIASES = {"datetime": "date-time"}   # the contract spells it both ways


def _to_json_schema(node: Any) -> Any:
    if isinstance(node, list):
        return [_to_json_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "discriminator":
            # OpenAPI-only; TaskSpec's `type` enum already constrains the same property.
            continue
        if key == "format" and isinstance(value, str):
            out[key] = _FORMAT_ALIASES.get(value, value)
        elif key in ("properties", "patternProperties", "definitions"):
            # Keys here are property names, not keywords: never translate them.
            out[key] = {name: _to_json_schema(sub) for name, sub in value.items()}
        else:
            out[key] = _to_json_schema(value)
    if out.pop("nullable", False) is True and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else [*out["type"], "null"]
    return out


@functools.lru_cache(maxsize=None)
def _schema_document() -> dict[str, Any]:
    doc = openapi()
    return {"components": {"schemas": _to_json_schema(doc["components"]["schemas"])}}


_RFC3339 = re.compile(
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt]([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)"
    r"(\.\d+)?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)$")

FORMAT_CHECKER = jsonschema.FormatChecker(formats=())


@FORMAT_CHECKER.checks("date-time")
def _is_date_time(value: object) -> bool:
    return not isinstance(value, str) or bool(_RFC3339.match(value))


@FORMAT_CHECKER.checks("int32")
def _is_int32(value: object) -> bool:
    return not isinstance(value, int) or -(1 << 31) <= value < (1 << 31)


@FORMAT_CHECKER.checks("int64")
def _is_int64(value: object) -> bool:
    return not isinstance(value, int) or -(1 << 63) <= value < (1 << 63)

# `urn`, `binary` and `uri` stay annotations: the contract marks plain ids (dataset ids, task ids)
# `format: urn`, and Sensei itself returns them as bare ids.


@functools.lru_cache(maxsize=None)
def _registry() -> Registry:
    resource = Resource.from_contents(_schema_document(), default_specification=DRAFT4)
    return Registry().with_resource(_DOC_URI, resource)


def schema_names() -> list[str]:
    return list(openapi()["components"]["schemas"])


def validator(schema_name: str) -> jsonschema.Draft4Validator:
    if schema_name not in openapi()["components"]["schemas"]:
        raise KeyError(f"No schema {schema_name!r} in the contract; known: {', '.join(schema_names())}")
    return jsonschema.Draft4Validator({"$ref": f"{_DOC_URI}#/components/schemas/{schema_name}"},
                                      registry=_registry(), format_checker=FORMAT_CHECKER)


def contract_errors(body: Any, schema_name: str) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in validator(schema_name).iter_errors(body)]


def validate(body: Any, schema_name: str) -> None:
    errors = contract_errors(body, schema_name)
    assert not errors, f"body does not satisfy {schema_name}:\n  " + "\n  ".join(errors) + \
        f"\nbody: {json.dumps(body)[:2000]}"


def schema_properties(schema_name: str) -> set[str]:
    """Every property name the schema declares, through allOf and $ref (for 'no unknown keys')."""
    names: set[str] = set()
    schemas = openapi()["components"]["schemas"]

    def walk(node: dict[str, Any]) -> None:
        if "$ref" in node:
            walk(schemas[node["$ref"].rsplit("/", 1)[1]])
        names.update(node.get("properties", {}))
        for part in node.get("allOf", ()):
            walk(part)

    walk(schemas[schema_name])
    return names


# --------------------------------------------------------------------------------------------
# Operations: declared success status, content type and body schema


@dataclass(frozen=True)
class Operation:
    method: str
    path: str            # the contract's template, e.g. /mlInstances/{mlInstanceId}
    operation_id: str
    status: int
    content_type: str    # e.g. application/vnd.adobe.platform.sensei+json;profile=mlInstance.v1.json
    schema: Optional[str]
    declared_statuses: frozenset[int]


def operation(method: str, path: str) -> Operation:
    try:
        op = openapi()["paths"][path][method.lower()]
    except KeyError:
        raise KeyError(f"The contract has no {method.upper()} {path}") from None
    # Response keys are a mix of strings ("200") and ints (201, 404): normalise them.
    responses = {int(code): spec for code, spec in op["responses"].items()}
    success = sorted(code for code in responses if 200 <= code < 300)
    assert len(success) == 1, f"{method} {path}: expected one success status, got {success}"
    status = success[0]
    # One operation declares an empty media type beside the real one: ignore it.
    content = {k: v for k, v in (responses[status].get("content") or {}).items() if k.strip()}
    assert len(content) == 1, f"{method} {path}: expected one success media type, got {list(content)}"
    media, spec = next(iter(content.items()))
    ref = (spec.get("schema") or {}).get("$ref")
    return Operation(method.upper(), path, op.get("operationId", ""), status, media,
                     ref.rsplit("/", 1)[1] if ref else None, frozenset(responses))


def operations() -> Iterable[tuple[str, str]]:
    for path, item in openapi()["paths"].items():
        for method in item:
            if method in ("get", "put", "post", "delete", "patch"):
                yield method.upper(), path


def media_type(header: Optional[str]) -> tuple[str, dict[str, str]]:
    """('type/subtype', {param: value}) of a Content-Type header, lower-cased where it may be."""
    parts = [p.strip() for p in (header or "").split(";")]
    params = {}
    for part in parts[1:]:
        if "=" in part:
            key, _, value = part.partition("=")
            params[key.strip().lower()] = value.strip().strip('"')
    return parts[0].lower(), params


def assert_contract(response: Any, method: str, path: str) -> Any:
    """The response has the operation's declared status, content type and body schema.

    Returns the parsed JSON body (or the raw bytes for a non-JSON media type).
    """
    op = operation(method, path)
    assert response.status_code == op.status, (
        f"{method} {path}: expected the contract's {op.status}, got {response.status_code}: "
        f"{response.text[:500]}")
    assert media_type(response.headers.get("content-type")) == media_type(op.content_type), (
        f"{method} {path}: expected content-type {op.content_type!r}, got "
        f"{response.headers.get('content-type')!r}")
    if not op.content_type.endswith("json") and "+json" not in op.content_type:
        return response.content
    body = response.json()
    if op.schema:
        validate(body, op.schema)
    return body


ERROR_KEYS = ("type", "title", "status", "detail")


def assert_error(response: Any, status: int, *detail_contains: str) -> dict[str, Any]:
    """A contract error body `{type, title, status, detail}` with this status and detail text."""
    assert response.status_code == status, (
        f"expected {status}, got {response.status_code}: {response.text[:500]}")
    assert media_type(response.headers.get("content-type"))[0].endswith("json"), \
        response.headers.get("content-type")
    body = response.json()
    validate(body, "SenseiApiResponse")
    # SenseiApiResponse requires nothing, so `{}` would pass the schema: require the four keys.
    missing = [k for k in ERROR_KEYS if k not in body]
    assert not missing, f"error body lacks {missing}: {body}"
    assert body["status"] == status, body
    assert body["type"].startswith("https://"), body
    assert body["title"].strip() and body["detail"].strip(), body
    for text in detail_contains:
        assert text.lower() in body["detail"].lower(), f"{text!r} not in detail {body['detail']!r}"
    return body


# --------------------------------------------------------------------------------------------
# Request bodies that satisfy the contract (and the runtime's required fields)


def _tag() -> str:
    return uuid.uuid4().hex[:8]


# An engine that passes registration (an importable module: POST /engines refuses a location that
# names nothing runnable) but has no such class: the server's background executor fails runs of it
# at once (FAILED, nothing trained), so runs created by these tests write nothing else.
UNINSTALLED_ENGINE = "runtime.engine:TestsUninstalledEngine"


def engine_body(name: Optional[str] = None, **extra: Any) -> dict[str, Any]:
    return {"name": name or f"engine-{_tag()}", "description": "An engine under test",
            "type": "Python", "algorithm": "regression", "mlLibrary": "scikit-learn",
            "language": ["Python"],
            "artifacts": {"default": {
                "image": {"location": UNINSTALLED_ENGINE, "name": "retail", "executionType": "Python",
                          "packagingType": "egg"},
                "defaultMLInstanceConfigs": [
                    {"name": "train", "parameters": [{"key": "learning_rate", "value": "0.1"}]}]}},
            "tags": {"team": "tests"}, **extra}


def mlinstance_body(engine_id: str, name: Optional[str] = None, **extra: Any) -> dict[str, Any]:
    return {"name": name or f"instance-{_tag()}", "description": "An MLInstance under test",
            "engineId": engine_id,
            "tasks": [{"name": "train", "parameters": [{"key": "learning_rate", "value": "0.3"}]},
                      {"name": "score", "parameters": [{"key": "output", "value": "out-1"}]}],
            **extra}


def experiment_body(mlinstance_id: str, name: Optional[str] = None, **extra: Any) -> dict[str, Any]:
    return {"name": name or f"experiment-{_tag()}", "description": "An experiment under test",
            "mlInstanceId": mlinstance_id,
            "template": {"tasks": [{"name": "train", "parameters": [
                {"key": "epochs", "value": "3"}]}]},
            "tags": {"team": "tests"}, **extra}


def run_body(mode: str = "train", **extra: Any) -> dict[str, Any]:
    return {"mode": mode, "description": "A run under test",
            "tasks": [{"name": "train", "parameters": [{"key": "epochs", "value": "1"}]}], **extra}


def model_body(run_id: str, name: Optional[str] = None, **extra: Any) -> dict[str, Any]:
    return {"name": name or f"model-{_tag()}", "description": "A model under test",
            "experimentRunId": run_id, "state": ["trained"], "tags": {"team": "tests"}, **extra}


def insight_body(*, engine_id: str = "", mlinstance_id: str = "", run_id: str = "",
                 name: Optional[str] = None) -> dict[str, Any]:
    context = {k: v for k, v in (("engineId", engine_id), ("mlInstanceId", mlinstance_id),
                                 ("experimentRunId", run_id)) if v}
    return {"context": {"clientId": name or f"client-{_tag()}", **context},
            "events": {"name": "evaluation", "eventValues": {"split": "holdout"}},
            "metrics": [{"name": "RMSE", "value": "0.42", "valueType": "double"},
                        {"name": "MAPE", "value": "3.1", "valueType": "double"}]}


def mlservice_body(mlinstance_id: str, name: Optional[str] = None, **extra: Any) -> dict[str, Any]:
    return {"name": name or f"service-{_tag()}", "description": "An MLService under test",
            "mlInstanceId": mlinstance_id, "scoringDataSetId": "dataset-score-1",
            "scoringTimeframe": 10000,
            "scoringSchedule": {"startTime": "2019-01-01T00:00:00.000Z",
                                "endTime": "2029-01-01T00:00:00.000Z", "cron": "20 * * * *"},
            "tags": {"team": "tests"}, **extra}


def copy_of(doc: Any) -> Any:
    return copy.deepcopy(doc)
