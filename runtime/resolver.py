"""The config resolver: one task's configuration layers in, typed config with per-key provenance out.

Pure: no I/O. Layers apply in order and later wins, on top of the engine schema's defaults. Only the
value that wins is typed, so a bad value hidden by a later layer is not an error.
"""
from __future__ import annotations

import collections.abc
import difflib
import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import AliasChoices, BaseModel, SecretBytes, SecretStr, ValidationError

from .errors import ConfigError
from .resources import (MEMORY_FIELDS, PARAMETER_KEYS, SPARK_CONF_PREFIX, SPECIFICATION_KEYS,
                        ResourceRequest)
from .tasks import canonical_task
from .textfit import wrap_cell

# Conventional layer names, in the order the service layer stacks them. The resolver itself only
# applies layers in the order given; DEFAULTS is the implicit first layer (the schema's defaults).
DEFAULTS = "default"
ENGINE = "engine"
MLINSTANCE = "mlInstance"
EXPERIMENT = "experiment"
RUN = "run"
CLI = "cli"
LAYER_ORDER = (DEFAULTS, ENGINE, MLINSTANCE, EXPERIMENT, RUN, CLI)

MASK = "********"

_COLLECTION_ORIGINS = (list, tuple, set, frozenset, collections.abc.Sequence,
                       collections.abc.Set, collections.abc.MutableSequence)
_MAPPING_ORIGINS = (dict, collections.abc.Mapping, collections.abc.MutableMapping)
_INTEGER = re.compile(r"[+-]?\d+")
_GPU_SHARE = re.compile(r"\d*\.\d+")   # gpus: 0.5 (a share of one device)


@dataclass(frozen=True)
class Layer:
    """One source of configuration.

    `tasks` is a task list in the API's shape (`[{"name", "parameters", "specification"}]`);
    `overrides` is a flat `key -> value` mapping (CLI `-p` pairs and `--params` files) applied after
    the layer's tasks; `secret_keys` marks override keys to mask, since a flat mapping has no
    `secret` flag of its own.
    """

    name: str
    tasks: Sequence[Mapping[str, Any]] | None = None
    overrides: Mapping[str, Any] | None = None
    secret_keys: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ResolvedConfig:
    """A task's final configuration. Keys are the API's names (aliases), never python field names."""

    task: str
    params: BaseModel | None          # the engine schema's typed instance; None without a schema
    values: dict[str, Any]            # key -> final python value (secrets unmasked: engines need them)
    provenance: dict[str, str]        # key -> layer name that set it (DEFAULTS for schema defaults)
    resources: ResourceRequest
    resource_provenance: dict[str, str]  # ResourceRequest field or spark.* key -> layer name
    secret_keys: frozenset[str] = frozenset()
    extra_keys: frozenset[str] = frozenset()  # keys kept (as strings) because the engine allows extras

    def to_record(self) -> dict[str, Any]:
        """A JSON-serialisable record to store with a run; secret values are masked."""
        values = {key: (MASK if key in self.secret_keys else value)
                  for key, value in self._json_values().items()}
        resources = self.resources.model_dump(mode="json")
        resources["spark_conf"] = {key: (MASK if key in self.secret_keys else value)
                                   for key, value in resources["spark_conf"].items()}
        return {
            "task": self.task,
            "values": values,
            "provenance": dict(self.provenance),
            "secret_keys": sorted(self.secret_keys),
            "extra_keys": sorted(self.extra_keys),
            "resources": resources,
            "resource_provenance": dict(self.resource_provenance),
        }

    def explain(self, width: int | None = None) -> str:
        """Every key's final value and the layer that set it, then the resources, as aligned tables;
        with `width`, a value too long for it wraps inside its column."""
        record = self.to_record()
        parameter_rows = [(key, _display(value, key in self.secret_keys), self.provenance[key])
                          for key, value in record["values"].items()]
        resource_rows = [(name, _display(value, False), self.resource_provenance.get(name, ""))
                         for name, value in record["resources"].items()
                         if name != "spark_conf" and value is not None]
        resource_rows += [(key, _display(value, key in self.secret_keys),
                           self.resource_provenance.get(key, ""))
                          for key, value in record["resources"]["spark_conf"].items()]
        width_key = max([len("parameter"), len("resource")] + [len(r[0]) for r in
                                                               parameter_rows + resource_rows])
        width_value = max([len("value")] + [len(r[1]) for r in parameter_rows + resource_rows])
        if width is not None:
            width_source = max([len("source")] + [len(r[2]) for r in parameter_rows + resource_rows])
            width_value = max(len("value"), min(width_value, width - width_key - width_source - 4))

        def table(title: str, rows: list[tuple[str, str, str]], empty: str) -> list[str]:
            lines = [f"{title:<{width_key}}  {'value':<{width_value}}  source",
                     f"{'-' * width_key}  {'-' * width_value}  {'-' * len('source')}"]
            if not rows:
                return lines + [f"({empty})"]
            for k, v, s in rows:
                first, *more = wrap_cell(v, width_value)
                lines.append(f"{k:<{width_key}}  {first:<{width_value}}  {s}".rstrip())
                lines += [f"{'':<{width_key}}  {piece}".rstrip() for piece in more]
            return lines

        lines = [f"Configuration of task {self.task!r}", ""]
        lines += table("parameter", parameter_rows, "no parameters")
        lines += [""]
        lines += table("resource", resource_rows, "none requested: the backend's defaults apply")
        return "\n".join(lines) + "\n"

    def _json_values(self) -> dict[str, Any]:
        dumped: dict[str, Any] = {}
        if self.params is not None:
            by_field = self.params.model_dump(mode="json", by_alias=False)
            names = _SchemaKeys(type(self.params))
            dumped = {names.api_name[field]: value for field, value in by_field.items()
                      if field in names.api_name}
        return {key: dumped[key] if key in dumped else self.values[key] for key in self.provenance}


def resolve(task: str, schema: type[BaseModel] | None, layers: Sequence[Layer], *,
            accepts_extra_keys: bool = False) -> ResolvedConfig:
    """Resolve `task`'s configuration from `layers` (later wins) over `schema`'s defaults.

    Raises one ConfigError listing every problem found (bad values, unknown keys, malformed layers);
    its `extra["problems"]` holds them one by one.
    """
    task = canonical_task(task)
    keys = _SchemaKeys(schema)
    problems: list[str] = []
    params: dict[str, _Setting] = {}
    resources: dict[str, _Setting] = {}
    spark_conf: dict[str, _Setting] = {}
    secret = set(keys.secret)

    for layer in layers:
        for entry in _read_layer(layer, task, problems):
            if entry.origin == "specification":
                target, slot = resources, SPECIFICATION_KEYS[entry.key]
            elif entry.key in PARAMETER_KEYS:
                target, slot = resources, PARAMETER_KEYS[entry.key]
            elif entry.key.startswith(SPARK_CONF_PREFIX):
                target, slot = spark_conf, entry.key
            elif entry.key in keys.spellings:
                target, slot = params, keys.spellings[entry.key]
            elif accepts_extra_keys:
                target, slot = params, entry.key
            else:
                problems.append(_unknown_key(entry, task, keys))
                continue
            target[slot] = entry
            if entry.secret:
                secret.add(slot)

    instance, values, provenance, extras = _type_parameters(task, schema, keys, params, secret,
                                                            problems)
    request, resource_provenance = _type_resources(resources, spark_conf, secret, problems)
    if problems:
        detail = (f"Cannot resolve the configuration of task {task!r}: {problems[0]}"
                  if len(problems) == 1 else
                  f"Cannot resolve the configuration of task {task!r} ({len(problems)} problems): "
                  + "; ".join(problems))
        raise ConfigError(detail, task=task, problems=problems)
    assert request is not None
    return ResolvedConfig(task=task, params=instance, values=values, provenance=provenance,
                          resources=request, resource_provenance=resource_provenance,
                          secret_keys=frozenset(secret), extra_keys=frozenset(extras))


# --- reading layers ---------------------------------------------------------------------------

@dataclass(frozen=True)
class _Setting:
    """One value as a layer gave it, before typing."""

    key: str        # the key as written (a parameter key, a specification field, an override key)
    raw: Any        # the value as written, for error messages
    value: Any      # normalised to the API's string form (lists and mappings kept)
    layer: str
    origin: str     # "parameters", "specification" or "overrides"
    secret: bool


def _read_layer(layer: Layer, task: str, problems: list[str]) -> list[_Setting]:
    """The layer's settings for `task`, in the order they apply: parameters, specification, overrides."""
    settings: list[_Setting] = []
    entry = _task_entry(layer, task, problems)
    if entry is not None:
        where = f"layer {layer.name!r}, task {entry.get('name')!r}"
        parameters = entry.get("parameters")
        if parameters is not None and not _is_list(parameters):
            problems.append(f"{where}: 'parameters' must be a list of {{key, value}} objects")
            parameters = None
        for index, parameter in enumerate(parameters or ()):
            if not isinstance(parameter, Mapping):
                problems.append(f"{where}: parameters[{index}] is not a {{key, value}} object")
                continue
            key = parameter.get("key")
            if not isinstance(key, str) or not key.strip():
                problems.append(f"{where}: parameters[{index}] has no 'key'")
                continue
            if "value" not in parameter:
                problems.append(f"{where}: parameter {key!r} has no 'value'")
                continue
            value = parameter["value"]
            settings.append(_Setting(key.strip(), value, _api_value(value), layer.name,
                                     "parameters", _flag(parameter.get("secret"))))
        specification = entry.get("specification")
        if specification is not None and not isinstance(specification, Mapping):
            problems.append(f"{where}: 'specification' must be an object")
            specification = None
        # Read after the parameters so that, within one layer, the specification wins.
        for spec_key in SPECIFICATION_KEYS:
            if specification is not None and specification.get(spec_key) is not None:
                value = specification[spec_key]
                settings.append(_Setting(spec_key, value, _api_value(value), layer.name,
                                         "specification", False))
    if layer.overrides is not None:
        if not isinstance(layer.overrides, Mapping):
            problems.append(f"layer {layer.name!r}: overrides must be a key -> value mapping")
        else:
            for key, value in layer.overrides.items():
                if not isinstance(key, str) or not key.strip():
                    problems.append(f"layer {layer.name!r}: override key {key!r} is not a name")
                    continue
                settings.append(_Setting(key.strip(), value, _api_value(value), layer.name,
                                         "overrides", key in layer.secret_keys))
    return settings


def _task_entry(layer: Layer, task: str, problems: list[str]) -> Mapping[str, Any] | None:
    if layer.tasks is None:
        return None
    if not _is_list(layer.tasks):
        problems.append(f"layer {layer.name!r}: 'tasks' must be a list of task objects")
        return None
    found: list[tuple[int, Mapping[str, Any]]] = []
    for index, entry in enumerate(layer.tasks):
        if not isinstance(entry, Mapping):
            problems.append(f"layer {layer.name!r}: tasks[{index}] is not a task object")
            continue
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append(f"layer {layer.name!r}: tasks[{index}] has no 'name'")
            continue
        if canonical_task(name) == task:
            found.append((index, entry))
    if len(found) > 1:
        spelled = ", ".join(f"tasks[{index}] {entry['name']!r}" for index, entry in found)
        problems.append(f"layer {layer.name!r} lists task {task!r} more than once ({spelled})")
        return None
    return found[0][1] if found else None


def _api_value(value: Any) -> Any:
    """A file or CLI value in the API's string form, so every layer types the same way."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_api_value(item) for item in value]
    return value


def _flag(value: Any) -> bool:
    # Masking too much is harmless; masking too little leaks a secret. Only a clear "no" is no.
    if isinstance(value, str):
        return value.strip().lower() not in ("", "false", "0", "no", "off")
    return bool(value)


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


# --- the engine schema ------------------------------------------------------------------------

class _SchemaKeys:
    """The names an engine schema accepts: each field's API name and every spelling of it."""

    def __init__(self, schema: type[BaseModel] | None) -> None:
        self.schema = schema
        self.api_name: dict[str, str] = {}      # python field name -> API name
        self.field_name: dict[str, str] = {}    # API name -> python field name
        self.spellings: dict[str, str] = {}     # any accepted spelling -> API name
        self.secret: set[str] = set()
        for name, info in (schema.model_fields.items() if schema is not None else ()):
            choices: list[str] = []
            if isinstance(info.validation_alias, str):
                choices = [info.validation_alias]
            elif isinstance(info.validation_alias, AliasChoices):
                choices = [c for c in info.validation_alias.choices if isinstance(c, str)]
            api = choices[0] if choices else (info.alias or name)
            self.api_name[name] = api
            self.field_name[api] = name
            for spelling in (api, *choices, info.alias, name):
                if spelling:
                    self.spellings.setdefault(spelling, api)
            if _mentions(info.annotation, (SecretStr, SecretBytes)):
                self.secret.add(api)

    def annotation(self, api: str) -> Any:
        assert self.schema is not None
        return self.schema.model_fields[self.field_name[api]].annotation


def _type_parameters(task: str, schema: type[BaseModel] | None, keys: _SchemaKeys,
                     params: dict[str, _Setting], secret: set[str], problems: list[str]
                     ) -> tuple[BaseModel | None, dict[str, Any], dict[str, str], list[str]]:
    model_input: dict[str, Any] = {}
    extras: dict[str, Any] = {}
    for api, setting in params.items():
        if api in keys.field_name:
            model_input[api] = _shape_for(keys.annotation(api), setting.value)
        else:
            extras[api] = _as_string(setting.value)

    instance: BaseModel | None = None
    if schema is not None:
        if schema.model_config.get("extra") == "allow":
            model_input.update(extras)
        try:
            instance = schema.model_validate(model_input)
        except ValidationError as exc:
            reported: set[str] = set()
            for error in exc.errors():
                key = keys.spellings.get(str(error["loc"][0]), str(error["loc"][0])) \
                    if error["loc"] else ""
                if key in reported:
                    continue  # a union reports one error per member; the first says enough
                reported.add(key)
                problems.append(_bad_value(task, keys, key, params.get(key), secret, error))

    values: dict[str, Any] = {}
    provenance: dict[str, str] = {}
    if instance is not None:
        for field, api in keys.api_name.items():
            values[api] = getattr(instance, field)
            provenance[api] = params[api].layer if api in params else DEFAULTS
    for key, value in extras.items():
        values[key] = value
        provenance[key] = params[key].layer
    return instance, values, provenance, list(extras)


def _shape_for(annotation: Any, value: Any) -> Any:
    """Strings for list- or dict-typed fields become a list (comma-separated or JSON) or a dict."""
    if not isinstance(value, str):
        return value
    if _origin_in(annotation, _COLLECTION_ORIGINS):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            if isinstance(parsed, list):
                return parsed
        return [item.strip() for item in text.split(",")] if text else []
    if _origin_in(annotation, _MAPPING_ORIGINS):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value  # pydantic then names the expected type
        return parsed
    return value


def _as_string(value: Any) -> Any:
    if isinstance(value, list):
        return ",".join(str(item) for item in value)
    if isinstance(value, Mapping):
        return json.dumps(value, sort_keys=True)
    return value


def _bad_value(task: str, keys: _SchemaKeys, key: str, setting: _Setting | None, secret: set[str],
               error: Mapping[str, Any]) -> str:
    if not key:
        return f"the parameters of task {task!r} are inconsistent: {error['msg']}"
    expected = _type_name(keys.annotation(key)) if key in keys.field_name else "a declared value"
    if setting is None:
        if error["type"] == "missing":
            return f"required parameter {key!r} ({expected}) is not set by any layer"
        return f"parameter {key!r}: {error['msg']}"
    shown = MASK if key in secret else repr(setting.raw)
    where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}"
                    for part in error["loc"][1:])
    detail = error["msg"] + (f" at {key}{where}" if where else "")
    return (f"parameter {key!r} = {shown} from layer {setting.layer!r} is not a valid "
            f"{expected} ({detail})")


def _unknown_key(setting: _Setting, task: str, keys: _SchemaKeys) -> str:
    known = sorted(set(keys.api_name.values()) | set(PARAMETER_KEYS))
    message = f"unknown parameter {setting.key!r} for task {task!r} from layer {setting.layer!r}"
    lowered = {name.lower(): name for name in known}
    match = lowered.get(setting.key.lower()) or next(
        iter(difflib.get_close_matches(setting.key, known, n=1, cutoff=0.6)), None)
    if match:
        return f"{message}; did you mean {match!r}?"
    declared = sorted(keys.api_name.values())
    return f"{message}; the engine declares " + (
        ", ".join(repr(name) for name in declared) if declared else "no parameters")


# --- resources --------------------------------------------------------------------------------

def _type_resources(resources: dict[str, _Setting], spark_conf: dict[str, _Setting],
                    secret: set[str], problems: list[str]
                    ) -> tuple[ResourceRequest | None, dict[str, str]]:
    def name(setting: _Setting) -> str:
        return (f"{setting.key!r} (specification)" if setting.origin == "specification"
                else repr(setting.key))

    request_input: dict[str, Any] = {}
    before = len(problems)
    for field, setting in resources.items():
        shown = MASK if field in secret else repr(setting.raw)
        text = setting.value.strip() if isinstance(setting.value, str) else None
        if field == "gpus" and text is not None and _GPU_SHARE.fullmatch(text):
            request_input[field] = float(text)   # a share of one GPU (0.5), checked below
            continue
        if text is None or not _INTEGER.fullmatch(text):
            why = ("memory must be an integer number of MB (for example '4096' for 4 GB)"
                   if field in MEMORY_FIELDS else "expected a whole number")
            problems.append(f"resource {name(setting)} = {shown} from layer {setting.layer!r}: {why}")
            continue
        request_input[field] = int(text)
    conf: dict[str, str] = {}
    for key, setting in spark_conf.items():
        if not isinstance(setting.value, str):
            shown = MASK if key in secret else repr(setting.raw)
            problems.append(f"Spark setting {key!r} = {shown} from layer {setting.layer!r}: "
                            "expected a single value")
            continue
        conf[key] = setting.value
    request: ResourceRequest | None = None
    try:
        request = ResourceRequest.model_validate({**request_input, "spark_conf": conf})
    except ValidationError as exc:
        for error in exc.errors():
            field = str(error["loc"][0])
            setting = resources[field]
            shown = MASK if field in secret else repr(setting.raw)
            kind = "a non-negative" if field in ("gpus", "system_metrics_interval_s") else "a positive"
            unit = " (memory in MB)" if field in MEMORY_FIELDS else ""
            what = (" or a share below 1 such as 0.5" if field == "gpus" else "")
            problems.append(f"resource {name(setting)} = {shown} from layer {setting.layer!r}: "
                            f"expected {kind} integer{unit}{what} ({error['msg']})")
    if len(problems) > before:
        return None, {}
    provenance = {field: setting.layer for field, setting in resources.items()}
    provenance.update({key: setting.layer for key, setting in spark_conf.items()})
    assert request is not None
    return request, provenance


# --- small helpers ----------------------------------------------------------------------------

def _members(annotation: Any) -> list[Any]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _members(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(annotation) if arg is not type(None)
                for m in _members(arg)]
    return [annotation]


def _origin_in(annotation: Any, origins: tuple[type, ...]) -> bool:
    return any((typing.get_origin(m) or m) in origins for m in _members(annotation))


def _mentions(annotation: Any, classes: tuple[type, ...]) -> bool:
    return any(isinstance(m, type) and issubclass(m, classes) for m in _members(annotation))


def _type_name(annotation: Any) -> str:
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return repr(annotation).replace("typing.", "")


def _display(value: Any, secret: bool) -> str:
    if secret:
        return MASK
    # JSON spelling keeps types visible: "10" is a string, 10 a number.
    return json.dumps(value)
