"""`run serve-model`: one MLService's published Model (following its publications) or one Model,
served alone with MLflow's and SageMaker's root contract (`POST /invocations`, `GET /ping`,
`/health`, `/version`), the inference protocol v2 and `GET /metrics` (the routes here, the HTTP
server runtime.serving.http_server); and `run predict`, which scores a file's rows through the
same host path without HTTP."""
from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from ..errors import MethodNotAllowed, NotFound
from .hosts import ServingOptions

V2_MODELS = "/v2/models/"


class ModelServer:
    """The routes of `run serve-model`, served by runtime.serving.http_server: the target's
    host is loaded before the server listens, and stopped with it."""

    def __init__(self, registry: Any, caller: Any, target: str, options: ServingOptions) -> None:
        from ..runs import RunExecutor
        from ..warm import pools_for
        from .service import Serving, find_target

        self.caller, self.options = caller, options
        self.kind, self.target_id = find_target(registry, caller, target)
        self.executor = RunExecutor(registry, kind="server",
                                    warm=pools_for(registry.home.root, kind="server"))
        self.serving = Serving(registry, self.executor, self.executor.warm, options)
        self.answer = self.serving.answer
        self.get = {"/ping": self.ping, "/health": self.ping, "/version": self.version,
                    "/metrics": self.metrics, "/v2/health/live": self.live,
                    "/v2/health/ready": self.ready}

    async def startup(self) -> None:
        await self.serving.describe(self.caller, self.kind, self.target_id)

    async def shutdown(self) -> None:
        await self.serving.aclose()
        self.executor.close_warm()

    def find(self, method: str, path: str) -> tuple[Any, bool]:
        """(handler, whether it reads the body) of a request; NotFound or MethodNotAllowed."""
        if path == "/invocations":
            if method == "POST":
                return self.invocations, True
            allowed = "POST"
        elif path in self.get:
            if method == "GET":
                return self.get[path], False
            allowed = "GET"
        elif path.startswith(V2_MODELS) and path[len(V2_MODELS):]:
            name, _, action = path[len(V2_MODELS):].partition("/")
            routes = {"": ("GET", self.model_metadata), "ready": ("GET", self.model_ready),
                      "infer": ("POST", self.infer)}
            if not name or action not in routes:
                raise NotFound(f"No such resource: {path}")
            allowed, handler = routes[action]
            if method == allowed:
                return (lambda exchange: handler(exchange, name)), allowed == "POST"
        else:
            raise NotFound(f"No such resource: {path}")
        return self._not_allowed(method, path, allowed), False

    @staticmethod
    def _not_allowed(method: str, path: str, allowed: str) -> Any:
        def answer(exchange: Any) -> tuple[int, dict[str, str], bytes]:
            exc = MethodNotAllowed(f"{method} is not allowed on {path}; allowed: {allowed}")
            return exc.status, {"Allow": allowed}, json.dumps(exc.to_body()).encode()
        return answer

    # --- scoring: the raw body to the host -----------------------------------------------------

    def invocations(self, exchange: Any) -> Any:
        return self.answer(self.caller, self.kind, self.target_id, exchange.body,
                           exchange.content_type, "mlflow", "invocations", exchange.disconnected)

    def infer(self, exchange: Any, name: str) -> Any:
        self._named(name)
        return self.answer(self.caller, self.kind, self.target_id, exchange.body,
                           exchange.content_type, "v2", "v2/infer", exchange.disconnected)

    def _named(self, name: str) -> None:
        hosts = self.serving.hosts
        if name not in (self.target_id, hosts and next(iter(hosts))):
            raise NotFound(f"This server serves {self.target_id!r}, not {name!r}")

    # --- the rest ------------------------------------------------------------------------------

    async def ping(self, exchange: Any) -> tuple[int, dict[str, str], bytes]:
        await self.serving.describe(self.caller, self.kind, self.target_id)
        return 200, {}, b"\n"

    def version(self, exchange: Any) -> tuple[int, dict[str, str], bytes]:
        from .. import __version__

        return 200, {}, json.dumps({"runtime": __version__, "target": self.target_id}).encode()

    def metrics(self, exchange: Any) -> tuple[int, dict[str, str], bytes]:
        from .metrics import CONTENT_TYPE

        return 200, {"Content-Type": CONTENT_TYPE}, self.serving.metrics.exposition()

    def live(self, exchange: Any) -> tuple[int, dict[str, str], bytes]:
        return 200, {}, b'{"live": true}'

    def ready(self, exchange: Any) -> tuple[int, dict[str, str], bytes]:
        return 200, {}, b'{"ready": true}'

    async def model_metadata(self, exchange: Any, name: str) -> tuple[int, dict[str, str], bytes]:
        from .payloads import v2_metadata

        self._named(name)
        info = await self.serving.describe(self.caller, self.kind, self.target_id)
        return 200, {}, json.dumps(v2_metadata(name, info)).encode()

    async def model_ready(self, exchange: Any, name: str) -> tuple[int, dict[str, str], bytes]:
        self._named(name)
        await self.serving.describe(self.caller, self.kind, self.target_id)
        return 200, {}, json.dumps({"name": name, "ready": True}).encode()


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
