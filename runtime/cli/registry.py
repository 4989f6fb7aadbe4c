"""`run engines ...` and `run instances ...`: the registry, on the local store, no server needed."""
from __future__ import annotations

import argparse
import json
from typing import Any

from ..documents import load_document
from ..home import resolve_home
from ..listing import parse_list_query
from ..schemas import KINDS, Kind
from ..registry import Caller, Registry

_COLUMNS = {
    "engine": (("ID", "id"), ("NAME", "name"), ("TYPE", "type"),
               ("VERSION", "artifacts.default.image.artifactVersion"),
               ("RECIPE", "artifacts.default.image.recipeKind"), ("CREATED", "created")),
    "mlInstance": (("ID", "id"), ("NAME", "name"), ("ENGINE", "engineId"), ("CREATED", "created")),
}


def _cell(row: dict[str, Any], dotted: str) -> str:
    value: Any = row
    for part in dotted.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def _table(rows: list[dict[str, Any]], columns: tuple[tuple[str, str], ...]) -> str:
    cells = [[h for h, _ in columns]] + [[_cell(r, f) for _, f in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells)


def _show(doc: dict[str, Any], kind: Kind, as_json: bool) -> None:
    if as_json:
        print(json.dumps(doc, indent=2))
        return
    width = max(len(k) for k in doc)
    for key, value in doc.items():
        shown = value if isinstance(value, str) else json.dumps(value)
        print(f"{key.ljust(width)}  {shown}")


def _with_artifact(body: Any, args: argparse.Namespace) -> tuple[Any, dict[str, bytes]]:
    """The Engine body and its uploads for `--artifact PATH`: a folder becomes the image location
    (stored by content at registration), a file is sent as the defaultArtifact upload is."""
    from pathlib import Path

    from ..errors import ConfigError

    path = getattr(args, "artifact", None)
    if not path:
        return body, {}
    artifact = Path(path).expanduser()
    if not artifact.exists():
        raise ConfigError(f"--artifact {path}: no such file or folder")
    if isinstance(body, dict) and artifact.is_dir():
        image = body.setdefault("artifacts", {}).setdefault("default", {}).setdefault("image", {})
        image["location"] = str(artifact.resolve())
        return body, {}
    return body, {"defaultArtifact": artifact.read_bytes()}


def main(args: argparse.Namespace) -> int:
    kind = KINDS[args.kind]
    registry = Registry.open(resolve_home(args.home))
    caller = Caller.local(org=args.org, sandbox=args.sandbox)
    try:
        if args.action == "create":
            doc = registry.create_engine(caller, *_with_artifact(load_document(args.file), args)) \
                if kind.name == "engine" else registry.create(kind, caller, load_document(args.file))
            _show(doc, kind, args.json) if args.json else print(f"Created {kind.title} {doc['id']}")
        elif args.action == "list":
            query = parse_list_query(kind, {k: v for k, v in (
                ("property", args.property), ("orderby", args.orderby), ("start", args.start),
                ("limit", args.limit)) if v is not None})
            page = registry.list(kind, caller, query)
            if args.json:
                print(json.dumps({"children": page.children, "_page": {
                    "orderby": query.orderby_text, "property": query.property_text,
                    "start": str(query.start), "totalCount": page.total,
                    "count": len(page.children)}}, indent=2))
            else:
                rows = page.children
                if any("." in field for _, field in _COLUMNS[kind.name]):   # detail fields
                    rows = [registry.get(kind, caller, row["id"]) for row in rows]
                print(_table(rows, _COLUMNS[kind.name]))
                print(f"{len(page.children)} of {page.total} {kind.title}s "
                      f"(start {query.start}, sandbox {caller.scope.sandbox})")
        elif args.action == "get":
            _show(registry.get(kind, caller, args.id), kind, args.json)
        elif args.action == "update":
            doc = registry.replace_engine(caller, args.id,
                                          *_with_artifact(load_document(args.file), args)) \
                if kind.name == "engine" else registry.replace(kind, caller, args.id,
                                                               load_document(args.file))
            _show(doc, kind, args.json) if args.json else print(f"Updated {kind.title} {doc['id']}")
        elif args.action == "delete":
            bulk_value = getattr(args, "bulk_value", None)
            if bulk_value and args.id:
                raise SystemExit("error: give an id or --engine, not both")
            if bulk_value:
                count = registry.delete_where(kind, caller, args.bulk[1], bulk_value)
                message = f"{kind.title}s successfully deleted"
            elif args.id:
                count = registry.delete(kind, caller, args.id)
                message = f"{kind.title} deletion was successful"
            else:
                raise SystemExit(f"error: give the id of the {kind.title} to delete")
            if args.json:
                print(json.dumps({"title": "Success", "status": 200, "detail": message,
                                  "deletedCount": count}))
            else:
                print(f"{message} ({count} object(s) deleted, owned objects included)")
    finally:
        registry.close()
    return 0
