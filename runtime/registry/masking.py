"""Secret parameters: a task parameter with "secret": true is stored but never returned in clear."""
from __future__ import annotations

import copy
from typing import Any, Iterable, Optional

SECRET_MASK = "********"


def walk_parameters(node: Any, path: tuple = ()) -> Iterable[tuple[tuple, dict]]:
    """(location, parameter) for every task parameter object in a document."""
    if isinstance(node, dict):
        if "key" in node and "value" in node:
            yield path + (node.get("key"),), node
            return
        for key, value in node.items():
            yield from walk_parameters(value, path + (key,))
    elif isinstance(node, list):
        for index, item in enumerate(node):
            label = item.get("name", index) if isinstance(item, dict) else index
            yield from walk_parameters(item, path + (label,))


def mask_secrets(doc: dict[str, Any]) -> dict[str, Any]:
    if not any(p.get("secret") is True for _, p in walk_parameters(doc)):
        return doc
    masked = copy.deepcopy(doc)
    for _, param in walk_parameters(masked):
        if param.get("secret") is True:
            param["value"] = SECRET_MASK
    return masked


def restore_secrets(new: dict[str, Any], old: dict[str, Any]) -> None:
    """A GET-modify-PUT round trip sends the mask back: keep the stored value for it."""
    stored = {loc: p["value"] for loc, p in walk_parameters(old) if p.get("secret") is True}
    for loc, param in walk_parameters(new):
        if param.get("secret") is True and param.get("value") == SECRET_MASK and loc in stored:
            param["value"] = stored[loc]


def secret_values(docs: Iterable[Optional[dict[str, Any]]]) -> Iterable[str]:
    """The secret parameter values of the documents given (None skipped), as text."""
    return (str(param.get("value")) for doc in docs if doc
            for _, param in walk_parameters(doc) if param.get("secret") is True)
