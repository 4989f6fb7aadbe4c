"""The generic routes of one kind's collection: list, create, bulk delete, get, replace, delete.
Each resource's router adds them after its own fixed paths, so those are not read as ids."""
from __future__ import annotations

from typing import Any, Callable, Optional

from fastapi import APIRouter, Request
from starlette.responses import Response

from ...listing import parse_list_query
from ...registry import Caller, Page, Registry
from ...schemas import Kind
from .. import deps
from ..deps import BASE, json_body, json_response, list_params, listing, location, success, write

# The document as answered (e.g. an MLService with its status): view(registry, caller, doc).
View = Callable[[Registry, Caller, dict[str, Any]], dict[str, Any]]


def add_collection(router: APIRouter, kind: Kind, *, create: bool = True, update: bool = True,
                   delete: bool = True, bulk_delete: Optional[str] = None,
                   view: Optional[View] = None) -> None:
    """`bulk_delete`: the query parameter of `DELETE` on the collection (e.g. `engineId`)."""
    path = f"{BASE}/{kind.collection}"
    shown: View = view or (lambda registry, caller, doc: doc)

    @router.get(path, name=f"list_{kind.collection}")
    async def list_(request: Request) -> Response:
        caller, registry = deps.caller(request), deps.registry(request)
        query = parse_list_query(kind, list_params(request))
        page = registry.list(kind, caller, query)
        if view is not None:
            page = Page([shown(registry, caller, doc) for doc in page.children], page.total,
                        page.query)
        return listing(request, kind, page)

    if create:
        @router.post(path, name=f"create_{kind.name}", status_code=201)
        async def create_(request: Request) -> Response:
            caller, registry = deps.caller(request), deps.registry(request)
            doc = await write(registry.create, kind, caller, await json_body(request))
            doc = shown(registry, caller, doc)
            return json_response(doc, kind.profile, 201, location(request, f"{path}/{doc['id']}"))

    if bulk_delete:
        @router.delete(path, name=f"delete_{kind.collection}")
        async def delete_many(request: Request) -> Response:
            caller, registry = deps.caller(request), deps.registry(request)
            await write(registry.delete_where, kind, caller, bulk_delete,
                        request.query_params.get(bulk_delete))
            return success(f"{kind.title}s successfully deleted")

    @router.get(path + "/{id}", name=f"get_{kind.name}")
    async def get_(request: Request, id: str) -> Response:
        caller, registry = deps.caller(request), deps.registry(request)
        return json_response(shown(registry, caller, registry.get(kind, caller, id)), kind.profile)

    if update:
        @router.put(path + "/{id}", name=f"update_{kind.name}")
        async def put_(request: Request, id: str) -> Response:
            caller, registry = deps.caller(request), deps.registry(request)
            body = await json_body(request)
            doc = await write(registry.replace, kind, caller, id, body)
            return json_response(shown(registry, caller, doc), kind.profile)

    if delete:
        @router.delete(path + "/{id}", name=f"delete_{kind.name}")
        async def delete_(request: Request, id: str) -> Response:
            caller, registry = deps.caller(request), deps.registry(request)
            await write(registry.delete, kind, caller, id)
            return success(f"{kind.title} deletion was successful")
