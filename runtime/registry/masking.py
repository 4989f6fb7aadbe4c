"""Secret parameters: a task parameter with "secret": true is stored but never returned in clear."""
from __future__ import annotations

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
    """The document with each secret parameter's value masked: `doc` itself when it has none,
    else a copy of the containers on the way to a secret only; the rest is shared with `doc`, which
    is never changed. (Every GET answers through here: no generator walk, no deep copy.)"""
    return _masked(doc)


def _masked(node: Any) -> Any:
    """`node`, or a copy of it with secrets masked; the parameters are those walk_parameters finds."""
    if isinstance(node, dict):
        if "key" in node and "value" in node:
            return {**node, "value": SECRET_MASK} if node.get("secret") is True else node
        copied = None
        for key, value in node.items():
            if isinstance(value, (dict, list)):
                masked = _masked(value)
                if masked is not value:
                    if copied is None:
                        copied = dict(node)
                    copied[key] = masked
        return node if copied is None else copied
    if isinstance(node, list):
        copied_list = None
        for index, item in enumerate(node):
            if isinstance(item, (dict, list)):
                masked = _masked(item)
                if masked is not item:
                    if copied_list is None:
                        copied_list = list(node)
                    copied_list[index] = masked
        return node if copied_list is None else copied_list
    return node


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
