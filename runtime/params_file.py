"""The CLI's configuration inputs: `-p key=value` pairs and `--params FILE.json|yaml`, as plain dicts.

The only part of configuration resolution that does I/O; its results become the resolver's CLI
layer, e.g. `Layer(CLI, overrides={**file.values, **parse_overrides(pairs)}, secret_keys=file.secret_keys)`.
"""
from __future__ import annotations

import datetime
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .documents import load_document
from .errors import ConfigError
from .resources import PARAMETER_KEYS, SPECIFICATION_KEYS
from .tasks import canonical_task

_PARAMETER_KEY_FOR_FIELD = {field: key for key, field in PARAMETER_KEYS.items()}


@dataclass(frozen=True)
class ParamsFile:
    """A params file's flat `key -> value` mapping, and the keys its task list marked secret."""

    values: dict[str, Any]
    secret_keys: frozenset[str] = frozenset()


def parse_overrides(pairs: Iterable[str]) -> dict[str, str]:
    """`["a=1", "b=x=y"]` -> `{"a": "1", "b": "x=y"}`: split on the first `=`; later pairs win."""
    overrides: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(f"Parameter override {pair!r} has no '=': write it as key=value")
        if not key.strip():
            raise ConfigError(f"Parameter override {pair!r} has no key before '='")
        overrides[key.strip()] = value
    return overrides


def load_params_file(path: str | os.PathLike[str], task: str | None = None) -> dict[str, Any]:
    """A params file as a flat `key -> value` dict; see `read_params_file`."""
    return read_params_file(path, task).values


def read_params_file(path: str | os.PathLike[str], task: str | None = None) -> ParamsFile:
    """Read a JSON or YAML params file (chosen by extension).

    The file holds either a flat mapping `key -> value`, or a task list in the API's shape (or an
    object with a `tasks` list, such as a saved MLInstance), from which `task`'s parameters are
    taken; resource fields of its specification become the matching parameters, and win over them.
    """
    path = Path(path)
    document = load_document(path, label="Params file")

    if isinstance(document, Mapping) and isinstance(document.get("tasks"), list):
        document = document["tasks"]
    if isinstance(document, list):
        return _from_task_list(path, document, task)
    if isinstance(document, Mapping):
        return ParamsFile(_flat(path, document))
    shape = "empty" if document is None else f"a single {type(document).__name__} value"
    raise ConfigError(f"Params file {str(path)!r} is {shape}: expected a mapping of key -> value "
                      "or a task list [{name, parameters: [{key, value}]}]")


def _flat(path: Path, document: Mapping[Any, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key, value in document.items():
        if not isinstance(key, str) or not key.strip():
            raise ConfigError(f"Params file {str(path)!r}: key {key!r} is not a parameter name")
        values[key.strip()] = _scalar(path, key, value)
    return values


def _scalar(path: Path, key: str, value: Any) -> Any:
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()  # YAML reads 2024-01-01 as a date; the API has only strings
    if isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, list) and all(isinstance(item, (str, int, float, bool)) for item in value):
        return value
    if value is None:
        raise ConfigError(f"Params file {str(path)!r}: parameter {key!r} has no value "
                          "(write \"\" for an empty string)")
    raise ConfigError(f"Params file {str(path)!r}: parameter {key!r} has a nested "
                      f"{type(value).__name__}; the file must be a flat mapping of key -> value "
                      "(a list of plain values is allowed)")


def _from_task_list(path: Path, tasks: list[Any], task: str | None) -> ParamsFile:
    if task is None:
        raise ConfigError(f"Params file {str(path)!r} holds a task list: say which task to take "
                          "its parameters from")
    wanted = canonical_task(task)
    found = []
    for index, entry in enumerate(tasks):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise ConfigError(f"Params file {str(path)!r}: tasks[{index}] is not a task object "
                              "with a 'name'")
        if canonical_task(entry["name"]) == wanted:
            found.append(entry)
    if not found:
        names = ", ".join(repr(e["name"]) for e in tasks) or "none"
        raise ConfigError(f"Params file {str(path)!r} has no task {wanted!r} (it has {names})")
    if len(found) > 1:
        raise ConfigError(f"Params file {str(path)!r} lists task {wanted!r} more than once")
    entry = found[0]

    values: dict[str, Any] = {}
    secret: set[str] = set()
    parameters = entry.get("parameters") or []
    if not isinstance(parameters, list):
        raise ConfigError(f"Params file {str(path)!r}: 'parameters' of task {wanted!r} must be a "
                          "list of {key, value} objects")
    for index, parameter in enumerate(parameters):
        if not isinstance(parameter, Mapping) or not isinstance(parameter.get("key"), str) \
                or not parameter["key"].strip():
            raise ConfigError(f"Params file {str(path)!r}: parameters[{index}] of task {wanted!r} "
                              "has no 'key'")
        key = parameter["key"].strip()
        values[key] = _scalar(path, key, parameter.get("value"))
        if parameter.get("secret") not in (None, False, "false", "False"):
            secret.add(key)
    specification = entry.get("specification") or {}
    if not isinstance(specification, Mapping):
        raise ConfigError(f"Params file {str(path)!r}: 'specification' of task {wanted!r} must be "
                          "an object")
    for spec_key, field in SPECIFICATION_KEYS.items():
        if specification.get(spec_key) is not None:
            values[_PARAMETER_KEY_FOR_FIELD[field]] = _scalar(path, spec_key,
                                                              specification[spec_key])
    return ParamsFile(values, frozenset(secret))
