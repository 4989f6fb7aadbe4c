"""The generic routes of one kind's collection: list, create, bulk delete, get, replace, delete.
Each resource's router adds them after its own fixed paths, so those are not read as ids."""
from __future__ import annotations

import inspect
from typing import Any, Awaitable, Callable, Optional

from fastapi import APIRouter, Request
from fastapi.routing import APIRoute
from starlette.convertors import StringConvertor
from starlette.responses import Response
from starlette.routing import request_response

from ...listing import parse_list_query
from ...registry import Caller, Page, Registry
from ...schemas import Kind
from .. import deps
from ..deps import (BASE, json_body, json_response, json_text_response, list_params, listing,
                    location, success, write)

class RequestRoute(APIRoute):
    """A route whose endpoint takes the request and its path's text parameters, nothing else, and
    answers a Response: FastAPI's handler would solve them as dependencies on every request (a
    sixth of a GET-by-id), here they are passed as they are. FastAPI still reads the signature
    for the OpenAPI. An endpoint that asks for anything more is refused when the route is made."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **options: Any) -> None:
        super().__init__(path, endpoint, **options)
        if self.max_body_size is None:
            # Starlette's wrapper: FastAPI's adds the exit stacks of dependencies with `yield`,
            # and these endpoints have no dependencies
            self.app = request_response(self.get_route_handler())

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        found = self.dependant
        texts = {f.name for f in found.path_params if f.field_info.annotation is str}
        plain = (found.request_param_name is not None
                 and not (found.query_params or found.header_params or found.cookie_params
                          or found.body_params or found.dependencies or self.body_field
                          or found.response_param_name or found.background_tasks_param_name
                          or found.websocket_param_name or found.http_connection_param_name
                          or found.security_scopes_param_name)
                 and texts == set(self.param_convertors) == {f.name for f in found.path_params}
                 and all(isinstance(c, StringConvertor) for c in self.param_convertors.values())
                 and inspect.iscoroutinefunction(self.endpoint))
        if not plain:
            raise TypeError(f"{self.path}: {self.endpoint.__name__} must be async and take only "
                            "the request and its path's str parameters")
        endpoint, request_name, names = self.endpoint, found.request_param_name, tuple(texts)

        async def handle(request: Request) -> Response:
            params = request.path_params   # a mount above may add its own: pass only ours
            return await endpoint(**{request_name: request},
                                  **{name: params[name] for name in names})

        return handle


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

    async def get_(request: Request, id: str) -> Response:
        caller, registry = deps.caller(request), deps.registry(request)
        if view is None:   # the stored text as it is, when it needs no masking
            return json_text_response(registry.get_json(kind, caller, id), kind.profile)
        return json_response(shown(registry, caller, registry.get(kind, caller, id)), kind.profile)

    # `router.get` with the lean route class (every GET-by-id of a kind comes here)
    router.add_api_route(path + "/{id}", get_, methods=["GET"], name=f"get_{kind.name}",
                         route_class_override=RequestRoute)

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
