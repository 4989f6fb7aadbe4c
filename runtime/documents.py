"""Reading JSON and YAML documents from files (or stdin) with errors that say where."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .errors import ConfigError


def load_document(path: str | Path) -> Any:
    """A JSON or YAML file's content (by extension; `-` reads JSON or YAML from stdin)."""
    name = str(path)
    if name == "-":
        text, suffix = sys.stdin.read(), ".yaml"
    else:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"File not found: {p}") from None
        except OSError as exc:
            raise ConfigError(f"Cannot read {p}: {exc}") from exc
        suffix = p.suffix.lower()
    if suffix == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{name}: invalid JSON at line {exc.lineno}, column {exc.colno}: "
                              f"{exc.msg}") from None
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            raise ConfigError(f"{name}: invalid YAML{where}: "
                              f"{getattr(exc, 'problem', None) or exc}") from None
    raise ConfigError(f"{name}: expected a .json, .yaml or .yml file")
