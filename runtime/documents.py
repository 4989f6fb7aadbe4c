"""Reading JSON and YAML documents from files (or stdin) with errors that say where."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigError

_SUFFIXES = {".json": "JSON", ".yaml": "YAML", ".yml": "YAML"}


def load_document(path: str | os.PathLike[str], label: str = "File") -> Any:
    """A JSON or YAML file's content, by extension (`-` reads JSON or YAML from stdin).

    `label` names the file in errors ("Params file 'p.yaml' is not valid YAML: ... at line 2").
    """
    if str(path) == "-":
        return _parse("<stdin>", "YAML", sys.stdin.read(), label)
    path = Path(path)
    shown = f"{label} {str(path)!r}"
    kind = _SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(f"{shown} has an unsupported extension {path.suffix or '(none)'!r}: "
                          "use .json, .yaml or .yml")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{shown} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{shown} is a directory, not a file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{shown} is not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise ConfigError(f"{shown} cannot be read: {exc.strerror}") from exc
    return _parse(str(path), kind, text, label)


def _parse(name: str, kind: str, text: str, label: str) -> Any:
    shown = f"{label} {name!r}"
    if kind == "JSON":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{shown} is not valid JSON: {exc.msg} at line {exc.lineno}, "
                              f"column {exc.colno}") from exc
    import yaml  # only files need YAML; keep `import runtime` light

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{shown} is not valid YAML: {problem}{where}") from exc
