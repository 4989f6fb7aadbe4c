"""Online scoring in the API process: which host answers a Model or an MLService (starting hosts
on first use, one start per Model however many requests wait for it), the raw body forwarded to
it, the swap when an MLService publishes a new Model (the new host loads and answers before the
route switches; the old one drains, then exits), and what is measured and logged per request.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Optional

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from ..errors import MLRuntimeError, NotFound
from ..schemas import MLSERVICE, MODEL
from .client import HostClient, HostGone
from .hosts import HostProcess, ServingOptions, launch, warm_parents
from .metrics import ServingMetrics
from .traffic import Traffic
from .wire import json_encoder

log = logging.getLogger("runtime.serving")

WATCH_S = 0.2            # how often a served MLService's published Model is read
AUTH_TTL_S = 5.0         # how long "this caller may reach this Model" is remembered
ALIVE_CHECK_S = 0.5      # a host's process is looked at this often (its socket says the rest)
WATCH_CLIENT_S = 0.05    # an answer slower than this: watch whether its client left
LOG_FLUSH_S = 0.2        # request log lines are written this long after, together
PREWARM_MAX_MODELS = 16  # published Models a server loads ahead of their first request


class Serving:
    """The hosts of one API process (`run serve` or `run serve-model`)."""

    def __init__(self, registry: Any, executor: Any, warm: Any,
                 options: Optional[ServingOptions] = None) -> None:
        self.registry = registry
        self.executor = executor
        self.warm = warm
        self.options = options or ServingOptions()
        self.hosts: dict[str, HostProcess] = {}
        self._starting: dict[str, asyncio.Future] = {}
        self.routes: dict[tuple[str, str, str], str] = {}      # (org, sandbox, service) -> model
        self._watchers: dict[tuple[str, str, str], asyncio.Task] = {}
        self._allowed: dict[tuple[str, str, str, str], float] = {}
        self.metrics = ServingMetrics(depths=lambda: {h.model_id: h.inflight
                                                       for h in list(self.hosts.values())})
        self.traffic = Traffic()
        self._log_lock = threading.Lock()
        log_dir = Path(registry.home.root) / "serving"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / "requests.jsonl"
        self._log = open(self.log_path, "a", encoding="utf-8")
        self._lines: list[str] = []
        self._ids = itertools.count(1)
        self._id_prefix = uuid.uuid4().hex[:8]
        self.closed = False

    # --- targets ---------------------------------------------------------------------------

    async def _check(self, caller: Any, kind: Any, target_id: str) -> None:
        key = (caller.scope.org, caller.scope.sandbox, kind.name, target_id)
        if time.monotonic() - self._allowed.get(key, -1e9) < AUTH_TTL_S:
            return
        await run_in_threadpool(self.registry.get, kind, caller, target_id)   # NotFound names it
        self._allowed[key] = time.monotonic()

    async def model_of_service(self, caller: Any, service_id: str) -> str:
        key = (caller.scope.org, caller.scope.sandbox, service_id)
        await self._check(caller, MLSERVICE, service_id)
        if key not in self.routes:
            model = await run_in_threadpool(self._published, caller.scope, service_id)
            if model is None:
                raise MLRuntimeError(f"MLService {service_id} has no published Model to score "
                                     "with: publish one first", status=409, title="Conflict")
            self.routes[key] = model["id"]
            if key not in self._watchers and not self.closed:   # even if this host fails
                self._watchers[key] = asyncio.get_running_loop().create_task(
                    self._watch(caller, key))
            await self.host(caller, model["id"])
        return self.routes[key]

    def _published(self, scope: Any, service_id: str) -> Optional[dict[str, Any]]:
        from ..mlservices import ServiceDesk

        return ServiceDesk(self.registry).published_model(scope, service_id)

    async def _watch(self, caller: Any, key: tuple[str, str, str]) -> None:
        """Follow the MLService's published Model: start and warm the new host, switch the
        route, then drain the old host."""
        while not self.closed:
            await asyncio.sleep(WATCH_S)
            try:
                model = await run_in_threadpool(self._published, caller.scope, key[2])
            except Exception:
                continue
            current = self.routes.get(key)
            if model is None or model["id"] == current:
                continue
            try:
                await self.host(caller, model["id"])
                await self._warm_up(self.hosts[model["id"]])
            except Exception as exc:
                log.warning("MLService %s published Model %s, which cannot be served: %s",
                            key[2], model["id"], exc)
                continue
            self.routes[key] = model["id"]
            log.info("MLService %s now answers with Model %s", key[2], model["id"])
            if current and current not in self.routes.values():
                old = self.hosts.pop(current, None)
                if old is not None:
                    asyncio.get_running_loop().create_task(self._drain(old))

    async def host(self, caller: Any, model_id: str) -> HostProcess:
        """The Model's live host, started (once) if it has none."""
        host = self.hosts.get(model_id)
        if host is not None:
            now = time.monotonic()
            if now - host.seen < ALIVE_CHECK_S:   # a host that died meanwhile: HostGone
                return host
            if host.alive():
                host.seen = now
                return host
        future = self._starting.get(model_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._starting[model_id] = future
            try:
                host = await run_in_threadpool(launch, self.registry, self.executor, self.warm,
                                               caller, model_id, self.options)
                host.client = HostClient(host.socket)
                answer = await host.client.call({"op": "info"})
                host.info = json.loads(answer.body)
                self.metrics.loaded(host)
                self.hosts[model_id] = host
                future.set_result(host)
            except BaseException as exc:
                future.set_exception(exc)
                future.exception()   # retrieved: no "never retrieved" warning
                raise
            finally:
                self._starting.pop(model_id, None)
            return host
        return await asyncio.shield(future)

    async def prewarm(self, published: list[tuple[Any, str, dict[str, Any]]]) -> None:
        """`run serve`, in the background once it listens (options.prewarm): the warm parents of
        the environments of these published Models ((caller, MLService id, Model) each) with
        what their hosts import ("parents"), then the Models loaded in their hosts ("models"),
        so that a first request costs a fork and a load, or nothing more than any other. A
        request meanwhile waits for the same start, of the parent or of the host."""
        mode = self.options.prewarm
        if mode == "off" or self.closed or not published:
            return
        started = time.monotonic()
        servable, lines = await run_in_threadpool(warm_parents, self.registry, self.executor,
                                                  self.warm, published)
        for line in lines:   # their first requests will say it again
            log.warning("online scoring: %s", line)
        loaded = 0
        if mode == "models":
            for caller, service_id, model in servable[:PREWARM_MAX_MODELS]:
                if self.closed:
                    return
                try:
                    await self.model_of_service(caller, service_id)
                    loaded += 1
                except Exception as exc:   # its first request will say why, as before
                    log.warning("MLService %s: its Model %s was not loaded ahead of requests: "
                                "%s", service_id, model["id"], exc)
        took = f"{time.monotonic() - started:.1f} s (MLRUNTIME_ONLINE_PREWARM={mode})"
        print(f"Online scoring: {loaded} of {len(servable)} published Model(s) loaded in {took}"
              if mode == "models" else f"Online scoring: the warm parents of {len(servable)} "
              f"published Model(s) started in {took}; they import what the hosts need meanwhile",
              flush=True)

    async def _warm_up(self, host: HostProcess) -> None:
        example = host.info.get("example")
        if example:
            await host.client.call({"op": "infer", "ct": "application/json",
                                    "protocol": "mlflow", "deadline": None},
                                   json.dumps({"dataframe_records": [example]}).encode())

    async def _drain(self, host: HostProcess) -> None:
        try:
            await host.client.call({"op": "drain"}, timeout_s=5.0)
        except Exception:
            pass
        for _ in range(600):
            if not host.alive():
                break
            await asyncio.sleep(0.1)
        host.client.close()
        await run_in_threadpool(host.stop)

    # --- a request -------------------------------------------------------------------------

    async def invoke(self, caller: Any, kind: str, target_id: str, body: bytes,
                     content_type: str, protocol: str, route: str,
                     disconnected: Any = None) -> Response:
        """The answer to one request for a Model (`kind` "model") or an MLService's published
        Model ("service"), as the host wrote it, with headers naming the Model."""
        status, headers, answer = await self.answer(caller, kind, target_id, body,
                                                    content_type, protocol, route, disconnected)
        return Response(answer, status_code=status, media_type="application/json",
                        headers=headers)

    async def answer(self, caller: Any, kind: str, target_id: str, body: bytes,
                     content_type: str, protocol: str, route: str,
                     disconnected: Any = None) -> tuple[int, dict[str, str], bytes]:
        """(status, headers, body) of one request; `disconnected`: an async function that says
        whether the client left (asked only while an answer is slower than WATCH_CLIENT_S)."""
        arrived = time.monotonic()
        request_id = f"{self._id_prefix}{next(self._ids):08x}"
        model_id = None
        status, rows, timings = 500, None, {}
        try:
            for attempt in range(3):   # a host replaced or gone meanwhile: the route's current one
                if kind == "service":
                    model_id = await self.model_of_service(caller, target_id)
                else:
                    await self._check(caller, MODEL, target_id)
                    model_id = target_id
                host = await self.host(caller, model_id)
                if len(body) > self.options.max_bytes:
                    from ..errors import PayloadTooLarge

                    raise PayloadTooLarge(f"The request body of {len(body)} bytes is over the "
                                          f"limit of {self.options.max_bytes} bytes")
                host.inflight += 1
                try:
                    answer = await self._call(host, body, content_type, protocol, disconnected)
                except HostGone:
                    if self.hosts.get(model_id) is host and not host.alive():
                        self.hosts.pop(model_id, None)
                    await asyncio.sleep(0.01 * (attempt + 1))
                    continue
                finally:
                    host.inflight -= 1
                if answer.headers.get("X-Host-Draining") and attempt < 2:
                    await asyncio.sleep(0.005)
                    continue
                break
            else:
                raise MLRuntimeError(f"The model host of Model {model_id} went away; try again",
                                     status=503, title="Service Unavailable")
            status, timings = answer.status, answer.timings
            rows = timings.get("rows")
            headers = {"X-Model-Id": model_id, "X-Request-Id": request_id}
            if answer.headers:
                headers.update((k, v) for k, v in answer.headers.items()
                               if k != "X-Host-Draining")
            if kind == "service":
                headers["X-MLService-Id"] = target_id
            if host.header_name:
                headers["X-Model-Name"] = host.header_name
            return status, headers, answer.body
        except MLRuntimeError as exc:
            status = exc.status
            headers = {"X-Request-Id": request_id, **({"X-Model-Id": model_id} if model_id
                                                       else {})}
            if status == 503:
                headers["Retry-After"] = "1"
            return status, headers, json.dumps(exc.to_body()).encode()
        except ClientLeft:
            status = 499   # nobody reads it: the connection is gone
            return 499, {}, b""
        except asyncio.TimeoutError:
            status = 504
            exc = MLRuntimeError("The model host did not answer before the request's deadline",
                                 status=504, title="Gateway Timeout")
            return 504, {"X-Request-Id": request_id}, json.dumps(exc.to_body()).encode()
        finally:
            self._record(caller, route, kind, target_id, model_id, status, rows, timings,
                         time.monotonic() - arrived, request_id, body)

    async def _call(self, host: HostProcess, body: bytes, content_type: str, protocol: str,
                    disconnected: Any) -> Any:
        """The host's answer. No task per request: the answer's future is awaited directly, and
        only an answer slower than WATCH_CLIENT_S starts a watch on the client (which cancels
        the request at the host when the client left) and on the deadline."""
        header = {"op": "infer", "ct": content_type, "protocol": protocol,
                  "deadline": time.time() + self.options.timeout_s}
        conn, request_id, future = await host.client.submit(header, body)
        loop = asyncio.get_running_loop()
        timer = loop.call_later(WATCH_CLIENT_S, self._watch_slow, future, disconnected,
                                self.options.timeout_s + 5 - WATCH_CLIENT_S)
        try:
            return await future
        except (asyncio.CancelledError, asyncio.TimeoutError, ClientLeft):
            host.client.cancel(conn, request_id)
            raise
        finally:
            timer.cancel()

    def _watch_slow(self, future: asyncio.Future, disconnected: Any, timeout_s: float) -> None:
        if not future.done():
            watch = asyncio.ensure_future(_watch_client(future, disconnected, timeout_s))
            future.add_done_callback(lambda _f: watch.cancel())

    def _record(self, caller: Any, route: str, kind: str, target_id: str,
                model_id: Optional[str], status: int, rows: Any, timings: dict[str, Any],
                total_s: float, request_id: str, body: bytes) -> None:
        self.metrics.request(route, model_id or "-", status, total_s, timings)
        if kind == "service":
            self.traffic.record(caller.scope, target_id, model_id, status, total_s)
        line = {"time": time.time(), "id": request_id, "caller": getattr(caller, "user_id", None),
                "route": route, "target": target_id, "model": model_id, "rows": rows,
                "status": status, "ms": round(total_s * 1000, 3)}
        for key, value in timings.items():
            if key.endswith("_ms") and isinstance(value, (int, float)):
                line[key] = round(value, 3)
        if self.options.capture:
            line["payload"] = body.decode("utf-8", errors="replace")
        with self._log_lock:
            self._lines.append(_dumps(line))
            if len(self._lines) == 1:
                self._flush_soon()

    def _flush_soon(self) -> None:
        """Log lines are written together LOG_FLUSH_S later (one write, not one a request)."""
        try:
            asyncio.get_running_loop().call_later(LOG_FLUSH_S, self.flush_log)
        except RuntimeError:   # no loop (a caller on a thread): now
            self.flush_log()

    def flush_log(self) -> None:
        with self._log_lock:
            lines, self._lines = self._lines, []
            if lines and not self._log.closed:
                self._log.write("\n".join(lines) + "\n")
                self._log.flush()

    def traffic_summary(self, scope: Any = None) -> dict[str, Any]:
        """Each MLService's online traffic (runtime.serving.traffic), of `scope` only if given."""
        return self.traffic.summary(scope)

    async def aclose(self) -> None:
        self.closed = True
        for task in self._watchers.values():
            task.cancel()
        hosts, self.hosts = list(self.hosts.values()), {}
        for host in hosts:
            if host.client is not None:
                host.client.close()
            await run_in_threadpool(host.stop)
        self.flush_log()
        self._log.close()

    async def kind_of(self, caller: Any, target: str) -> str:
        """"service" or "model": what an id names (v2's model name, serve-model's target)."""
        key = (caller.scope.org, caller.scope.sandbox, target)
        kinds = self.__dict__.setdefault("_kinds", {})
        if key not in kinds:
            kinds[key] = (await run_in_threadpool(find_target, self.registry, caller, target))[0]
        return kinds[key]

    async def describe(self, caller: Any, kind: str, target_id: str) -> dict[str, Any]:
        model_id = (await self.model_of_service(caller, target_id) if kind == "service"
                    else target_id)
        if kind != "service":
            await self._check(caller, MODEL, target_id)
        host = await self.host(caller, model_id)
        answer = await host.client.call({"op": "info"})
        return {**json.loads(answer.body), "modelId": model_id}


class ClientLeft(Exception):
    """The request's client closed its connection before the answer."""


async def _watch_client(future: asyncio.Future, disconnected: Any, timeout_s: float) -> None:
    """A slow answer's watch: its client leaving (ClientLeft) or the deadline passing
    (TimeoutError) ends the wait on `future`."""
    until = time.monotonic() + timeout_s
    while not future.done():
        if disconnected is not None and await disconnected():
            if not future.done():
                future.set_exception(ClientLeft())
            return
        if time.monotonic() > until:
            if not future.done():
                future.set_exception(asyncio.TimeoutError())
            return
        await asyncio.sleep(WATCH_CLIENT_S)


_dumps = json_encoder((", ", ": "))   # request log lines (one encoder, not one a line)


def find_target(registry: Any, caller: Any, target: str) -> tuple[str, str]:
    """("service" | "model", id) for an MLService id or a Model id."""
    try:
        registry.get(MLSERVICE, caller, target)
        return "service", target
    except NotFound:
        pass
    try:
        registry.get(MODEL, caller, target)
        return "model", target
    except NotFound:
        raise NotFound(f"{target!r} is neither an MLService nor a Model of this sandbox") from None
