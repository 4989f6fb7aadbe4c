"""`run serve-model`: one MLService's published Model (following its publications) or one Model,
served alone with MLflow's and SageMaker's root contract (`POST /invocations`, `GET /ping`,
`/health`, `/version`), the inference protocol v2 and `GET /metrics`; and `run predict`, which
scores a file's rows through the same host path without HTTP."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from fastapi import Request   # module level: FastAPI reads the routes' annotations from here
from starlette.responses import Response

from ..request_bodies import read_limited
from .hosts import ServingOptions


def build_app(registry: Any, caller: Any, target: str, options: ServingOptions) -> Any:
    from fastapi import FastAPI

    from .. import __version__
    from ..errors import MLRuntimeError
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

    return app


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
