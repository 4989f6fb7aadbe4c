"""`run serve-model`: one MLService's published Model (following its publications) or one Model,
served alone with MLflow's and SageMaker's root contract (`POST /invocations`, `GET /ping`,
`/health`, `/version`), the inference protocol v2 and `GET /metrics`; and `run predict`, which
scores a file's rows through the same host path without HTTP."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any, Optional

from fastapi import Request   # module level: FastAPI reads the routes' annotations from here
from starlette.responses import Response

from ..errors import MLRuntimeError
from ..request_bodies import read_limited
from .hosts import ServingOptions


def build_app(registry: Any, caller: Any, target: str, options: ServingOptions) -> Any:
    from fastapi import FastAPI

    from .. import __version__
    from ..runs import RunExecutor
    from ..warm import pools_for
    from .metrics import CONTENT_TYPE
    from .service import Serving, find_target

    kind, target_id = find_target(registry, caller, target)
    executor = RunExecutor(registry, kind="server", warm=pools_for(registry.home.root,
                                                                   kind="server"))
    serving = Serving(registry, executor, executor.warm, options)

    async def lifespan(app: Any):
        await serving.describe(caller, kind, target_id)   # loaded before the first request
        yield
        await serving.aclose()
        executor.close_warm()

    app = FastAPI(title="MLInstance Runtime model server", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.serving = serving

    def problem(exc: MLRuntimeError) -> Response:
        return Response(json.dumps(exc.to_body()).encode(), status_code=exc.status,
                        media_type="application/json")

    async def invoke(request: Request, protocol: str, route: str) -> Response:
        try:
            body = await read_limited(request, options.max_bytes)
        except MLRuntimeError as exc:
            return problem(exc)
        return await serving.invoke(caller, kind, target_id, body,
                                    request.headers.get("content-type", ""), protocol, route,
                                    request.is_disconnected)

    @app.post("/invocations")
    async def invocations(request: Request) -> Response:
        return await invoke(request, "mlflow", "invocations")

    @app.get("/ping")
    @app.get("/health")
    async def ping() -> Response:
        try:
            await serving.describe(caller, kind, target_id)
        except MLRuntimeError as exc:
            return problem(exc)
        return Response(b"\n", media_type="application/json")

    @app.get("/version")
    async def version() -> Response:
        return Response(json.dumps({"runtime": __version__, "target": target_id}).encode(),
                        media_type="application/json")

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(serving.metrics.exposition(), media_type=CONTENT_TYPE)

    @app.get("/v2/health/live")
    async def live() -> Response:
        return Response(b'{"live": true}', media_type="application/json")

    @app.get("/v2/health/ready")
    async def ready() -> Response:
        return Response(b'{"ready": true}', media_type="application/json")

    def named(name: str) -> None:
        if name not in (target_id, serving.hosts and next(iter(serving.hosts))):
            from ..errors import NotFound

            raise NotFound(f"This server serves {target_id!r}, not {name!r}")

    @app.get("/v2/models/{name}")
    async def model_metadata(name: str) -> Response:
        from .payloads import v2_metadata

        try:
            named(name)
            info = await serving.describe(caller, kind, target_id)
        except MLRuntimeError as exc:
            return problem(exc)
        return Response(json.dumps(v2_metadata(name, info)).encode(),
                        media_type="application/json")

    @app.get("/v2/models/{name}/ready")
    async def model_ready(name: str) -> Response:
        try:
            named(name)
            await serving.describe(caller, kind, target_id)
        except MLRuntimeError as exc:
            return problem(exc)
        return Response(json.dumps({"name": name, "ready": True}).encode(),
                        media_type="application/json")

    @app.post("/v2/models/{name}/infer")
    async def infer(request: Request, name: str) -> Response:
        try:
            named(name)
        except MLRuntimeError as exc:
            return problem(exc)
        return await invoke(request, "v2", "v2/infer")

    async def answer(path: str, body: bytes, content_type: str,
                     disconnected: Any) -> tuple[int, dict[str, str], bytes]:
        if path == "/invocations":
            protocol, route = "mlflow", "invocations"
        else:
            try:
                named(path[len(V2_PREFIX):-len(V2_SUFFIX)])
            except MLRuntimeError as exc:
                return exc.status, {}, json.dumps(exc.to_body()).encode()
            protocol, route = "v2", "v2/infer"
        return await serving.answer(caller, kind, target_id, body, content_type, protocol,
                                    route, disconnected)

    return ScoringRoutes(app, answer, options.max_bytes)


V2_PREFIX, V2_SUFFIX = "/v2/models/", "/infer"


class ScoringRoutes:
    """The ASGI app served: `POST /invocations` and `POST /v2/models/{name}/infer` answered
    here, without FastAPI's routing, dependency solving and middleware (a third of a request's
    CPU in the API process for a model as quick as noop); every other request, and the
    lifespan, go to the FastAPI app (the same answers and bodies either way)."""

    def __init__(self, app: Any, answer: Any, max_bytes: int) -> None:
        self.app, self.answer, self.max_bytes = app, answer, max_bytes

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not (
                scope["path"] == "/invocations" or (scope["path"].startswith(V2_PREFIX)
                                                    and scope["path"].endswith(V2_SUFFIX))):
            await self.app(scope, receive, send)
            return
        content_type, length = "", None
        for name, value in scope["headers"]:
            if name == b"content-type":
                content_type = value.decode("latin-1")
            elif name == b"content-length":
                length = value
        left = asyncio.Event()
        listening: list[asyncio.Task] = []

        async def disconnected() -> bool:
            """Asked only while an answer is slow: has http.disconnect arrived?"""
            if not listening:
                listening.append(asyncio.ensure_future(_until_disconnect(receive, left)))
            return left.is_set()

        try:
            body = await _body(receive, length, self.max_bytes)
            if body is None:
                return   # the client left while sending
            status, headers, answer = await self.answer(scope["path"], body, content_type,
                                                        disconnected)
        except MLRuntimeError as exc:
            status, headers, answer = exc.status, {}, json.dumps(exc.to_body()).encode()
        finally:
            for task in listening:
                task.cancel()
        raw = [(b"content-type", b"application/json"),
               (b"content-length", str(len(answer)).encode())]
        raw.extend((k.lower().encode("latin-1"), str(v).encode("latin-1"))
                   for k, v in headers.items())
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": answer})


async def _body(receive: Any, length: Optional[bytes], limit: int) -> Optional[bytes]:
    """The request's body, a 413 as soon as it passes `limit` (its declared length first)."""
    from ..errors import PayloadTooLarge

    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"The request body of {int(length)} bytes is over the limit of "
                              f"{limit} bytes")
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"The request body is over the limit of {limit} bytes")
            chunks.append(chunk)
        if not message.get("more_body"):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _until_disconnect(receive: Any, left: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    left.set()


CONTENT_TYPES = {".json": "application/json", ".csv": "text/csv"}


def predict_file(registry: Any, caller: Any, target: str, path: Path,
                 options: ServingOptions) -> tuple[int, bytes]:
    """(status, answer body) for a file of rows, scored by a host of the target."""
    from ..errors import BadRequest
    from ..runs import RunExecutor
    from ..warm import pools_for
    from .service import Serving, find_target

    content_type = CONTENT_TYPES.get(path.suffix.lower())
    if content_type is None:
        raise BadRequest(f"{path.name}: give rows as .json (an MLflow body, or a list of "
                         "records) or .csv")
    body = path.read_bytes()
    if content_type == "application/json":
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise BadRequest(f"{path}: not JSON ({exc})") from None
        if isinstance(doc, list):   # a plain list of records is the common file
            body = json.dumps({"dataframe_records": doc}).encode()
    kind, target_id = find_target(registry, caller, target)
    executor = RunExecutor(registry, kind="cli", warm=pools_for(registry.home.root, kind="cli"))

    async def main() -> tuple[int, bytes]:
        serving = Serving(registry, executor, executor.warm, options)
        try:
            response = await serving.invoke(caller, kind, target_id, body, content_type,
                                            "mlflow", "predict")
            return response.status_code, bytes(response.body)
        finally:
            await serving.aclose()

    return asyncio.run(main())
