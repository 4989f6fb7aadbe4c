"""The contract the fuzzer runs: the reference OpenAPI plus exactly this runtime's documented
differences (README, "Differences from the platform"), and links for the stateful phase.

The reference (`../shared/reference/sensei-ml-api.openapi.yaml`) is read in place; the copy is
written into a test's temporary folder. Every change made here is one listed difference:

1. Headers: `x-gw-ims-org-id` and `x-sandbox-name` default to `local` / `prod` and `x-api-key`
   is not used, so none is required; `Authorization` is required only when tokens are configured.
2. Bodies: the fields this runtime requires (non-empty `name`, the parent id, a run's `mode`,
   an MLService's schedule) come from the pydantic schemas in `runtime/schemas.py`, the one
   place they are defined; a task or parameter list holds one item (duplicate task names or
   parameter keys are a 400, and JSON Schema cannot say "unique by key").
3. Listing queries: `orderby` and `property` name fields the collection has (an unknown field is a
   400 naming it), `start` is a whole number.
4. Statuses: each operation also declares the error statuses the server's own OpenAPI
   (`/data/sensei/openapi.json`) documents for it (404, 413, 415, 422, ...).
5. Multipart parts `engine` and `model` are JSON documents of the entity (the contract says
   "string").

A reference to a parent that does not exist (an MLInstance's `engineId`, ...) is a 400 naming the
field: the fuzzer cannot know which ids exist, so the test accepts 400 from the operations that
carry such a reference (`PARENT_REFERENCE_OPERATIONS`).
"""
from __future__ import annotations

import copy
import json
import re
import sys
import typing
from pathlib import Path
from typing import Any, Literal, Optional

from pydantic import BaseModel

from runtime import schemas as rs
from runtime.listing import DEFAULT_LIMIT  # noqa: F401  (the listing module the server parses with)

from contract import openapi

BASE_PATH = "/data/sensei"
DEFAULTED_HEADERS = ("x-gw-ims-org-id", "x-sandbox-name", "x-api-key")
FUZZ_ORG, FUZZ_SANDBOX = "FUZZ@AdobeOrg", "fuzz"

# Contract component -> the pydantic schema the server validates it with.
COMPONENT_SCHEMAS: dict[str, type[BaseModel]] = {
    "EngineSummary": rs.EngineIn,
    "MLInstanceSummary": rs.MLInstanceIn,
    "ExperimentSummary": rs.ExperimentIn,
    "ExperimentRunSummary": rs.ExperimentRunIn,
    "ModelSummary": rs.ModelIn,
    "MLServiceSummary": rs.MLServiceIn,
    "Insight": rs.InsightIn,
    "MLInstanceTask": rs.Task,
    "MLInstanceTaskParameter": rs.TaskParameter,
    "InsightMetric": rs.InsightMetric,
}

# Listing path -> the kind whose fields `orderby` and `property` may name.
LISTINGS = {
    "/engines": rs.ENGINE, "/mlInstances": rs.MLINSTANCE, "/experiments": rs.EXPERIMENT,
    "/experiments/{experimentId}/runs": rs.EXPERIMENT_RUN, "/models": rs.MODEL,
    "/insights": rs.INSIGHT, "/mlServices": rs.MLSERVICE,
}

PARENT_REFERENCE_OPERATIONS = (
    ("POST", "/experiments/{experimentId}/runs"),   # a body experimentId other than the path's
    ("POST", "/engines"),   # a defaultArtifact that is no recipe archive (zip, tar.gz)
    ("POST", "/mlInstances"), ("PUT", "/mlInstances/{mlInstanceId}"),
    ("POST", "/experiments"), ("PUT", "/experiments/{experimentId}"),
    ("POST", "/mlServices"), ("PUT", "/mlServices/{serviceId}"),
    ("POST", "/models"), ("PUT", "/models/{modelId}"),
)

# Stateful phase: from each create to the reads, updates and deletes of what it created.
LINKS: dict[tuple[str, str], dict[str, tuple[str, str, str]]] = {
    ("/engines", "post"): {
        "GetEngine": ("/engines/{engineId}", "get", "engineId"),
        "PutEngine": ("/engines/{engineId}", "put", "engineId"),
        "DeleteEngine": ("/engines/{engineId}", "delete", "engineId"),
    },
    ("/mlInstances", "post"): {
        "GetMLInstance": ("/mlInstances/{mlInstanceId}", "get", "mlInstanceId"),
        "PutMLInstance": ("/mlInstances/{mlInstanceId}", "put", "mlInstanceId"),
        "DeleteMLInstance": ("/mlInstances/{mlInstanceId}", "delete", "mlInstanceId"),
    },
    ("/experiments", "post"): {
        "GetExperiment": ("/experiments/{experimentId}", "get", "experimentId"),
        "PutExperiment": ("/experiments/{experimentId}", "put", "experimentId"),
        "DeleteExperiment": ("/experiments/{experimentId}", "delete", "experimentId"),
        "ListRuns": ("/experiments/{experimentId}/runs", "get", "experimentId"),
    },
    ("/models", "post"): {
        "GetModel": ("/models/{modelId}", "get", "modelId"),
        "PutModel": ("/models/{modelId}", "put", "modelId"),
        "DeleteModel": ("/models/{modelId}", "delete", "modelId"),
        "GetModelArtifact": ("/models/{modelId}/artifact", "get", "modelId"),
        "ListTranscodings": ("/models/{modelId}/transcodings", "get", "modelId"),
    },
    ("/insights", "post"): {
        "GetInsight": ("/insights/{insightId}", "get", "insightId"),
    },
    ("/mlServices", "post"): {
        "GetMLService": ("/mlServices/{serviceId}", "get", "serviceId"),
        "PutMLService": ("/mlServices/{serviceId}", "put", "serviceId"),
        "DeleteMLService": ("/mlServices/{serviceId}", "delete", "serviceId"),
    },
}
# The parent a create names in its body, linked from the parent's create.
PARENT_LINKS = {
    ("/engines", "post"): ("CreateMLInstance", "/mlInstances", "engineId"),
    ("/mlInstances", "post"): ("CreateExperiment", "/experiments", "mlInstanceId"),
}


SERVER_FIELDS = ("id", "created", "createdBy", "updated", "deleted", "_links")


def _field_patch(model: type[BaseModel]) -> dict[str, Any]:
    """What `model` says and the contract leaves out: required fields, non-empty strings, enums of
    literals, integers; `null` for an optional field (it means absent); free-form objects kept as
    given (`dict[str, Any]`: task `datasets`, `specification`, ...); server-owned fields read-only
    (ignored in a request)."""
    required: list[str] = []
    properties: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        key = info.alias or name
        if info.is_required():
            required.append(key)
        constraint: dict[str, Any] = {}
        if key in SERVER_FIELDS:
            constraint["readOnly"] = True
        elif not info.is_required():
            constraint["nullable"] = True
        free = _free_form(info.annotation)
        if free is not None:
            properties[key] = {**free, **constraint}
            continue
        for meta in info.metadata:
            if getattr(meta, "min_length", None):
                constraint["minLength"] = meta.min_length
        annotation = info.annotation
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        inner = args[0] if len(args) == 1 else annotation
        if typing.get_origin(inner) is list:
            item = typing.get_args(inner)[0]
            if typing.get_origin(item) is Literal:
                constraint["items"] = {"enum": list(typing.get_args(item))}
        if inner is int and info.is_required():
            constraint["type"] = "integer"
        if constraint:
            properties[key] = constraint
    patch: dict[str, Any] = {}
    if required:
        patch["required"] = required
    if properties:
        patch["properties"] = properties
    return patch


def _free_form(annotation: Any) -> Optional[dict[str, Any]]:
    """A schema without inner constraints for `dict[str, Any]` and `list[dict[str, Any]]`."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    inner = args[0] if len(args) == 1 and typing.get_origin(annotation) is not dict else annotation
    if typing.get_origin(inner) is dict and typing.get_args(inner)[1:] == (Any,):
        return {"type": "object"}
    if typing.get_origin(inner) is list:
        item = typing.get_args(inner)[0]
        if typing.get_origin(item) is dict and typing.get_args(item)[1:] == (Any,):
            return {"type": "array", "items": {"type": "object"}}
    return None


def _with_patch(schema: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`schema` with `patch` merged in place (properties and required extended)."""
    out = copy.deepcopy(schema)
    if "allOf" in out:
        out["allOf"].append(patch)
        return out
    out["required"] = sorted(set(out.get("required", [])) | set(patch.get("required", [])))
    if not out["required"]:
        del out["required"]
    props = out.setdefault("properties", {})
    for key, constraint in patch.get("properties", {}).items():
        if "type" in constraint and constraint.get("type") in ("object", "array") \
                and "properties" not in constraint:
            props[key] = constraint   # free-form: the contract's inner shape is not checked
        else:
            props[key] = {**props.get(key, {}), **constraint}
    return out


def _listing_params(kind: rs.Kind) -> dict[str, dict[str, Any]]:
    fields = sorted(kind.fields)
    text = [f for f in fields if kind.fields[f] == "str"]
    alternatives = "|".join(f.replace(".", r"\.") for f in text)
    return {
        "orderby": {"type": "array", "items": {"type": "string", "enum": fields + [
            "-" + f for f in fields]}},
        # text fields compared with == or != to a value without a comma (commas separate them)
        "property": {"type": "array", "items": {
            "type": "string", "pattern": rf"^({alternatives})(==|!=)[^,]*$"}},
        "start": {"type": "string", "pattern": r"^[0-9]{0,6}$"},
    }


def local_contract(*, tokens: bool, served: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """The reference contract with this runtime's documented differences (see the module doc)."""
    doc = copy.deepcopy(openapi())
    doc["servers"] = [{"url": BASE_PATH}]
    schemas = doc["components"]["schemas"]
    for name, model in COMPONENT_SCHEMAS.items():
        schemas[name] = _with_patch(schemas[name], _field_patch(model))
    schemas["ExperimentRunSummary"] = _with_patch(schemas["ExperimentRunSummary"], {
        "properties": {"mode": {"enum": ["train", "score", "featurePipeline", "fp"]}}})
    schemas["EngineSummary"] = _with_patch(schemas["EngineSummary"], {
        "properties": {"type": {"enum": list(rs.ENGINE_TYPES)}}})
    schemas["MLInstanceTaskList"]["maxItems"] = 1
    schemas["MLEngineArtifact"].pop("required", None)   # an image may name only its location
    engine_extra = schemas["Engine"]["allOf"][1]["properties"]
    engine_extra["artifacts"]["properties"]["overrides"] = _free_form(list[dict[str, Any]])
    _mark_read_only(schemas)
    task = schemas["MLInstanceTask"]
    task["properties"]["parameters"]["maxItems"] = 1

    served_operations = {(_template(p[len(BASE_PATH):]), m): op
                         for p, ops in (served or {}).get("paths", {}).items()
                         for m, op in ops.items()}
    for path, operations in doc["paths"].items():
        kind = LISTINGS.get(path)
        for method, operation in operations.items():
            if not isinstance(operation, dict):
                continue
            for param in operation.get("parameters", []):
                if param.get("in") == "header" and (
                        param["name"].lower() in DEFAULTED_HEADERS
                        or (param["name"].lower() == "authorization" and not tokens)):
                    param["required"] = False
                if param.get("in") == "header" and param["name"].lower() == "content-type":
                    # The body's media type is declared in requestBody, and schemathesis sends it
                    # even when its negative case "drops" this header parameter; the 415 for a
                    # body without a JSON Content-Type is tested in test_conformance_edges.py.
                    param["required"] = False
                if param.get("in") == "query" and method == "delete":
                    # bulk delete by parent: the parent id is required (never "delete all")
                    param["required"] = True
                    param["schema"] = {**param.get("schema", {}), "minLength": 1}
                if param.get("in") == "query" and kind is not None and method == "get":
                    override = _listing_params(kind).get(param["name"])
                    if override is not None:
                        param["schema"] = override
            # YAML reads some statuses as numbers: one spelling, strings
            responses = {str(k): v for k, v in operation.get("responses", {}).items()}
            operation["responses"] = responses
            served_op = served_operations.get((_template(path), method), {})
            for status in served_op.get("responses", {}):
                responses.setdefault(str(status), {"description": "Documented by the server"})
            body = operation.get("requestBody")
            if body:
                body["required"] = True   # POST /engines and /models need their entity too
                content_types = body.get("content", {})
                for media, content in list(content_types.items()):
                    if media.startswith("application/vnd.adobe.platform.sensei+json"):
                        # application/json is taken as well as the Sensei profiles
                        content_types.setdefault("application/json", copy.deepcopy(content))
            if body and (path, method) in (("/engines", "post"), ("/models", "post")):
                # these creates take the entity as JSON too (README: "The API server")
                entity = "Engine" if path == "/engines" else "Model"
                body["content"]["application/json"] = {
                    "schema": {"$ref": f"#/components/schemas/{entity}"}}
            for content in (body or {}).get("content", {}).values():
                props = content.get("schema", {}).get("properties", {})
                for part, entity in (("engine", "Engine"), ("model", "Model")):
                    if part in props:
                        props[part] = {"$ref": f"#/components/schemas/{entity}"}
                        content["schema"]["required"] = [part]
                        # other part names are a 400 (a part name becomes a file name)
                        content["schema"]["additionalProperties"] = False
                        content.setdefault("encoding", {})[part] = {
                            "contentType": "application/json"}
            links = LINKS.get((path, method))
            if links:
                created = responses.setdefault("201", responses.get("200", {"description": "Created"}))
                out = created.setdefault("links", {})
                for name, (target, target_method, param) in links.items():
                    out[name] = {"operationRef": _operation_ref(target, target_method),
                                 "parameters": {param: "$response.body#/id"}}
                parent = PARENT_LINKS.get((path, method))
                if parent:
                    name, target, body_field = parent
                    # a whole valid body: the link's requestBody replaces the generated one
                    out[name] = {"operationRef": _operation_ref(target, "post"),
                                 "requestBody": {"name": f"linked {target[1:]}",
                                                 body_field: "$response.body#/id"}}
    return doc


def _mark_read_only(node: Any) -> None:
    """Server-owned fields (`_links`, `id`, ...) anywhere in the components: ignored in a request."""
    if isinstance(node, list):
        for item in node:
            _mark_read_only(item)
    elif isinstance(node, dict):
        for key, value in node.get("properties", {}).items():
            if key in SERVER_FIELDS and isinstance(value, dict) and "$ref" not in value:
                value["readOnly"] = True
        for value in node.values():
            _mark_read_only(value)


def _template(path: str) -> str:
    """A path with its parameter names erased: `/models/{id}` and `/models/{modelId}` are one."""
    return re.sub(r"\{[^}]*\}", "{}", path)


def _operation_ref(path: str, method: str) -> str:
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method


# --------------------------------------------------------------------------------------------
# Running the fuzzer


def fuzzer_config(ids: Optional[dict[str, list[str]]] = None, stateful_examples: int = 40) -> str:
    """schemathesis.toml: a 400 is an expected answer to a schema-valid request only where the
    body names a parent that may not exist (see PARENT_REFERENCE_OPERATIONS). `ids`: path
    parameter -> ids of objects seeded before the run, drawn half the time (the other half stays
    random, so unknown ids keep meeting their 404)."""
    # The stateful phase walks create -> read/update/delete chains: valid data, more scenarios
    # than the per-operation examples, each up to 8 steps.
    lines = ["[phases.stateful]", "max-steps = 8", "[phases.stateful.generation]",
             'mode = "positive"', f"max-examples = {stateful_examples}", ""]
    if ids:
        lines.append("[dictionaries]")
        lines += [f"{name} = {{ values = {json.dumps(values)} }}" for name, values in ids.items()]
        # reads, updates and creates under them; never deletes, which would leave nothing
        lines += ["", "[[operations]]", 'include-method-regex = "^(GET|PUT|POST)$"',
                  "[operations.parameters]"]
        lines += [f'"path.{name}" = {{ dictionary = "{name}", probability = 0.5 }}' for name in ids]
        lines.append("")
    # schemathesis 4.32's coverage phase fails on these multipart bodies with binary parts
    # ("Unsupported type: 'Binary'"); the fuzzing and stateful phases still cover them.
    for path in ("/engines", "/models"):
        lines += ["[[operations]]", f'include-path = "{path}"', 'include-method = "POST"',
                  "[operations.phases.coverage]", "enabled = false", ""]
    for method, path in PARENT_REFERENCE_OPERATIONS:
        lines += ["[[operations]]", f'include-path = "{path}"', f'include-method = "{method}"',
                  "[operations.checks.positive_data_acceptance]",
                  "expected-statuses = [\"2XX\", \"3XX\", 400, 401, 403, 404, 409, 429]", ""]
    return "\n".join(lines)


def fuzzer_command(contract_path: Path, api_url: str, *, config_path: Path, max_examples: int,
                   seed: int, token: Optional[str] = None, phases: str = "examples,coverage,fuzzing,stateful",
                   max_time_s: Optional[int] = None, workers: int = 1,
                   report_path: Optional[Path] = None) -> list[str]:
    """`st run` with every check against `api_url`, as a command line."""
    st = Path(sys.executable).with_name("st")
    command = [str(st) if st.exists() else "st", "--no-color", "--config-file", str(config_path),
               "run", str(contract_path), "--url", api_url, "--checks", "all",
               "--max-examples", str(max_examples), "--seed", str(seed), "--workers", str(workers),
               "--phases", phases, "--request-timeout", "30", "--header", "x-api-key: fuzz-key",
               # One org and sandbox: objects are sandbox-scoped, so a link from a create to the
               # read of what it created needs both requests in the same sandbox.
               "--header", f"x-gw-ims-org-id: {FUZZ_ORG}", "--header", f"x-sandbox-name: {FUZZ_SANDBOX}"]
    if token is not None:
        command += ["--header", f"Authorization: Bearer {token}"]
    if max_time_s is not None:
        command += ["--max-time", str(max_time_s)]
    if report_path is not None:
        command += ["--report", "json", "--report-json-path", str(report_path)]
    return command


def prepare_fuzz_run(folder: Path, api_url: str, *,
                     token: Optional[str] = None) -> tuple[Path, Path]:
    """Writes the local contract (with the statuses the server at `api_url` documents) and the
    fuzzer's config into `folder`. `token`: the server has tokens, and this is one."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else None
    response = httpx.get(api_url + "/openapi.json", timeout=30, headers=headers)
    response.raise_for_status()
    contract = local_contract(tokens=token is not None, served=response.json())
    contract_path = folder / "sensei-ml-api.local.json"
    contract_path.write_text(json.dumps(contract, indent=1))
    config_path = folder / "schemathesis.toml"
    config_path.write_text(fuzzer_config(seed_objects(api_url, token)))
    return contract_path, config_path


def seed_objects(api_url: str, token: Optional[str] = None) -> dict[str, list[str]]:
    """One object of each kind, chained (Engine, MLInstance, Experiment, run, Model, Insight,
    MLService), in the fuzzer's org and sandbox: ids the fuzzer draws for the path parameters,
    so that reads, updates and deletes of real objects are exercised too (random bodies rarely
    name an existing parent, so the fuzzer's own creates rarely get that far)."""
    import httpx

    headers = {"x-gw-ims-org-id": FUZZ_ORG, "x-sandbox-name": FUZZ_SANDBOX}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    with httpx.Client(base_url=api_url, headers=headers, timeout=30) as client:
        def create(path: str, body: dict[str, Any]) -> str:
            response = client.post(path, json=body)
            response.raise_for_status()
            return response.json()["id"]

        engine = create("/engines", {"name": "Seeded engine", "type": "Python", "artifacts": {
            "default": {"image": {"location": "noop"}}}})
        instance = create("/mlInstances", {"name": "Seeded instance", "engineId": engine})
        experiment = create("/experiments", {"name": "Seeded experiment",
                                             "mlInstanceId": instance})
        run = create(f"/experiments/{experiment}/runs", {"mode": "train"})
        model = create("/models", {"name": "Seeded model", "experimentRunId": run,
                                   "experimentId": experiment})
        insight = create("/insights", {"context": {"experimentId": experiment},
                                       "metrics": [{"name": "MAPE", "value": "0.1"}]})
        ids = {"engineId": [engine], "mlInstanceId": [instance], "experimentId": [experiment],
               "experimentRunId": [run], "modelId": [model], "insightId": [insight]}
        # With tokens, a data set path must lie under the server's data roots (a 403 otherwise):
        # the MLService is seeded only where its scoring path is accepted.
        response = client.post("/mlServices", json={
            "name": "Seeded service", "mlInstanceId": instance, "scoringDataSetId": "scores.csv",
            "scoringTimeframe": 1, "scoringSchedule": {"cron": "0 0 * * *"}})
        if response.status_code == 201:
            ids["serviceId"] = [response.json()["id"]]
    return ids
