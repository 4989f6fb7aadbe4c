"""A model host: the process that keeps one loaded Model and answers its online requests.

It is started as a worker of a score task whose engine is `ModelHost` (so it is forked from the
warm parent of the Model's environment, exactly as a score run is, and checks the Model's digest
as a score run does): `load_model` loads the Model's own engine and model once, `score` serves
until it is drained or its owner (the API process) is gone. Requests arrive as raw bodies over an
abstract Unix socket (runtime.serving.wire); parsing, validation and prediction happen here.

Micro-batching: requests that arrive while a batch computes wait in a bounded queue and go into
the next batch together (up to `max_batch_rows` rows; after an optional `batch_wait_ms`), their
rows returned to each request in order. A full queue is a 503 with Retry-After, a request past
its deadline a 504, and one whose client left is dropped before it computes.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Optional

from ..engine import Engine, OnlinePredictor, TaskContext, load_engine, parse_params
from ..errors import ConfigError, MLRuntimeError
from ..tasks import SCORE
from . import payloads, wire

HOST_FILE = "host.json"
OWNER_CHECK_S = 0.5
# A batch that computed within this much CPU time and this much wall time: the next one computes
# on the event loop itself (a slower model, or one that waits, computes on the predict thread, so
# that the loop reads requests and cancels meanwhile).
INLINE_S = 0.005
INLINE_WALL_S = 0.025


@dataclass
class Loaded:
    """The Model's engine and model, loaded once, and what answers requests."""

    engine: Engine
    ctx: TaskContext
    model: Any
    predictor: OnlinePredictor
    config: dict[str, Any]
    load_s: float


class ModelHost(Engine):
    """The engine of a model host's worker: it wraps the Model's own engine (host.json)."""

    name = "model-host"
    kind = "python"
    accepts_extra_keys = True
    description = "Serves a loaded Model online (runtime.serving)"
    loads_data_sets: ClassVar[bool] = True
    saves_output: ClassVar[bool] = True
    score_input = "raw"

    def load_data(self, ctx: TaskContext, uri: str) -> Any:
        return None   # requests are its data

    def load_model(self, ctx: TaskContext, directory: Path) -> Loaded:
        from ..worker import _engine_values

        config = json.loads((Path(ctx.artifact_dir) / HOST_FILE).read_text())
        started = time.perf_counter()
        engine_cls = load_engine(config["engine"])
        params = parse_params(engine_cls, SCORE, _engine_values(engine_cls, SCORE,
                                                                config.get("values") or {}))
        inner = TaskContext(task=SCORE, params=params, device=ctx.device, threads=ctx.threads,
                            logger=ctx.logger, artifact_dir=ctx.artifact_dir,
                            model_digest=ctx.model_digest)
        engine = engine_cls()
        model = engine.load_model(inner, Path(directory))
        from .recipes import predictor_for

        predictor = predictor_for(engine, inner, model)
        if predictor.example:   # the first request must not pay for lazy set-up
            predictor.predict(_example_rows(predictor))
        return Loaded(engine, inner, model, predictor, config,
                      round(time.perf_counter() - started, 4))

    def score(self, ctx: TaskContext, model: Loaded, data: Any) -> Any:
        HostServer(model).serve()
        return None

    def save_output(self, ctx: TaskContext, frame: Any) -> Optional[str]:
        return None


def _example_rows(predictor: OnlinePredictor) -> Any:
    """The example row as a request carrying it arrives (cast, as columns if the engine takes
    them), so the warm-up goes the way requests go."""
    body = json.dumps({"dataframe_records": [predictor.example]}, default=str).encode()
    return payloads.parse(body, "application/json", "mlflow", payloads.Limits(),
                          predictor.input_schema, predictor.required,
                          columns=predictor.takes_columns).frame


@dataclass(eq=False)
class Pending:
    conn: "HostConn"
    id: Any
    parsed: payloads.Parsed
    rows: int
    protocol: str
    received: float
    parse_s: float
    deadline: Optional[float]
    cancelled: bool = False


class HostConn:
    """One connection from the API process: its frames handled as they arrive (no task per
    frame), its answers written once per turn of the loop."""

    def __init__(self, server: "HostServer") -> None:
        self.server = server
        self.pending: dict[Any, Pending] = {}
        self.protocol = wire.FrameProtocol(self.frame, self.lost, server.read_done)

    @property
    def closed(self) -> bool:
        return self.protocol.closed

    def send(self, header: dict[str, Any], body: bytes = b"") -> None:
        self.protocol.send(header, body)

    def flush(self) -> None:
        if self.protocol.outbox is not None:
            self.protocol.outbox.flush()

    def frame(self, header: dict[str, Any], body: bytes) -> None:
        op = header.get("op")
        if op == "infer":
            self.server.admit(self, header, body)
        elif op == "cancel":
            pending = self.pending.get(header.get("id"))
            if pending is not None:
                pending.cancelled = True
        elif op == "info":
            self.send({"id": header.get("id"), "status": 200},
                      json.dumps(self.server.describe()).encode())
        elif op == "drain":
            self.server.draining = True
            self.send({"id": header.get("id"), "status": 200}, b"{}")
            self.server.check_drained()

    def lost(self) -> None:
        for pending in self.pending.values():   # its requests' client is gone
            pending.cancelled = True


def problem(exc: MLRuntimeError) -> bytes:
    return json.dumps(exc.to_body()).encode()


def _runner() -> asyncio.Runner:
    """uvloop's event loop where the Model's environment has it (fewer microseconds a frame),
    asyncio's otherwise."""
    try:
        import uvloop
    except ImportError:
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


class HostServer:
    def __init__(self, loaded: Loaded) -> None:
        config = loaded.config
        self.loaded = loaded
        self.predictor = loaded.predictor
        self.name = config["socket"]
        self.limits = payloads.Limits(max_rows=int(config.get("max_rows", 100_000)),
                                      max_bytes=int(config.get("max_bytes", 64 << 20)))
        self.max_batch_rows = max(1, int(config.get("max_batch_rows", 1024)))
        self.batch_wait_s = float(config.get("batch_wait_ms", 0)) / 1000.0
        self.batching = bool(config.get("batching", True)) and self.predictor.row_independent
        self.max_queue = max(1, int(config.get("max_queue", 256)))
        self.owner = config.get("owner")
        self.model_name = config.get("model_name") or config.get("model_id") or "model"
        self.model_version = str(config.get("model_version") or config.get("model_id") or "1")
        self.queue: deque[Pending] = deque()
        self.draining = False
        self.computing = False
        self.scheduled = False   # a batch is due on the loop
        self.stats = {"requests": 0, "dropped": 0, "expired": 0, "rejected": 0}
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="predict")
        self.inline = False   # set after each batch: did it compute within INLINE_S

    def serve(self) -> None:
        with _runner() as runner:
            runner.run(self.run())

    async def run(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.done = asyncio.Event()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind("\0" + self.name)
        sock.listen(256)
        server = await self.loop.create_unix_server(lambda: HostConn(self).protocol, sock=sock)
        print(f"model host {os.getpid()}: listening on @{self.name} (load "
              f"{self.loaded.load_s:.3f} s, batching "
              f"{'on' if self.batching else 'off'}, max {self.max_batch_rows} rows a batch)",
              flush=True)
        watcher = asyncio.create_task(self.watch_owner())
        await self.done.wait()
        server.close()
        watcher.cancel()
        self.pool.shutdown(wait=True)
        print(f"model host {os.getpid()}: stopped ({self.stats})", flush=True)

    async def watch_owner(self) -> None:
        from ..pools import parse_owner
        from ..procs import proc_start_ticks

        owner = parse_owner(self.owner)
        while True:
            await asyncio.sleep(OWNER_CHECK_S)
            if owner is not None:
                now = proc_start_ticks(owner[0])
                if now is None or (owner[1] is not None and now != owner[1]):
                    self.done.set()   # nobody is left to answer
                    return
            self.check_drained()

    def check_drained(self) -> None:
        if self.draining and not self.queue and not self.computing and not self.scheduled:
            self.done.set()

    # --- requests ----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        p = self.predictor
        return {"pid": os.getpid(), "model": self.model_name, "version": self.model_version,
                "loadS": self.loaded.load_s, "inputSchema": p.input_schema,
                "required": list(p.required), "example": p.example, "slow": p.slow,
                "batching": self.batching, "rowIndependent": p.row_independent,
                "maxBatchRows": self.max_batch_rows, "maxQueue": self.max_queue,
                "queued": len(self.queue), "draining": self.draining, **self.stats}

    def admit(self, conn: HostConn, header: dict[str, Any], body: bytes) -> None:
        received = time.monotonic()
        request_id = header.get("id")
        if self.draining:
            self.reply_error(conn, request_id, MLRuntimeError(
                "This model host is being replaced; send the request again", status=503,
                title="Service Unavailable"), {"Retry-After": "1", "X-Host-Draining": "1"})
            return
        if len(self.queue) >= self.max_queue:
            self.stats["rejected"] += 1
            self.reply_error(conn, request_id, MLRuntimeError(
                f"The model's queue is full ({self.max_queue} requests wait): try again shortly",
                status=503, title="Service Unavailable"), {"Retry-After": "1"})
            return
        protocol = header.get("protocol") or "mlflow"
        try:
            parsed = payloads.parse(body, header.get("ct") or "", protocol, self.limits,
                                    self.predictor.input_schema, self.predictor.required,
                                    columns=self.predictor.takes_columns)
        except MLRuntimeError as exc:
            self.reply_error(conn, request_id, exc)
            return
        except Exception as exc:   # a body pandas could not make a table of
            self.reply_error(conn, request_id, MLRuntimeError(
                f"The rows cannot be read as a table ({type(exc).__name__})", status=400,
                title="Bad Request"))
            return
        deadline = header.get("deadline")
        pending = Pending(conn, request_id, parsed, parsed.rows, protocol, received,
                          time.monotonic() - received,
                          None if deadline is None else float(deadline))
        conn.pending[request_id] = pending
        self.queue.append(pending)
        self.stats["requests"] += 1

    def reply_error(self, conn: HostConn, request_id: Any, exc: MLRuntimeError,
                    headers: Optional[dict[str, str]] = None) -> None:
        conn.send({"id": request_id, "status": exc.status, "headers": headers or {},
                   "timings": {}}, problem(exc))

    # --- batches -----------------------------------------------------------------------------

    def read_done(self) -> None:
        """After the frames of one read: an idle host computes them as one batch at once (a
        waiting time first, if one is set)."""
        if not self.queue or self.scheduled or self.computing:
            return
        if self.batch_wait_s and self.batching:
            self.scheduled = True
            self.loop.call_later(self.batch_wait_s, self.run_batch)
        else:
            self.run_batch()

    def schedule(self) -> None:
        """The next batch, on the loop's next turn: what arrived while a batch computed (and
        cancels of it) is read first and goes into it."""
        if self.scheduled or self.computing:
            return
        self.scheduled = True
        if self.batch_wait_s and self.batching:
            self.loop.call_later(self.batch_wait_s, self.run_batch)
        else:
            self.loop.call_soon(self.run_batch)

    def run_batch(self) -> None:
        self.scheduled = False
        batch = self.take()
        if not batch:
            self.check_drained()
            return
        self.computing = True
        if self.inline:   # a quick model: no thread hand-off (two wake-ups saved)
            self.finish(batch, self.guarded_compute(batch))
            return
        future = self.loop.run_in_executor(self.pool, self.guarded_compute, batch)
        future.add_done_callback(lambda f: self.finish(batch, f.result()))

    def guarded_compute(self, batch: list[Pending]) -> list[tuple[int, bytes, dict[str, Any]]]:
        cpu, wall = time.thread_time(), time.perf_counter()
        try:
            return self.compute(batch)
        except Exception as exc:   # never leave a batch unanswered
            import traceback

            traceback.print_exc()
            body = problem(MLRuntimeError(f"The model host failed ({type(exc).__name__})"))
            return [(500, body, {"started": time.monotonic()}) for _ in batch]
        finally:
            # the model's own CPU time decides (a busy machine stretches the wall clock: a quick
            # model stays on the loop however loaded the cores are), but a model that waits
            # (a GPU, a sleep, I/O) computes on the thread while the loop reads requests
            self.inline = (time.thread_time() - cpu < INLINE_S
                           and time.perf_counter() - wall < INLINE_WALL_S)

    def finish(self, batch: list[Pending],
               answers: list[tuple[int, bytes, dict[str, Any]]]) -> None:
        self.computing = False
        conns = set()
        for pending, (status, body, timings) in zip(batch, answers):
            pending.conn.pending.pop(pending.id, None)
            timings.update(queue_ms=round(timings.pop("started") - pending.received, 6) * 1000,
                           parse_ms=pending.parse_s * 1000, rows=pending.rows)
            pending.conn.send({"id": pending.id, "status": status, "timings": timings,
                               "headers": {}}, body)
            conns.add(pending.conn)
        for conn in conns:   # the batch's answers go now, in one write per connection
            conn.flush()
        if self.queue:
            self.schedule()
        else:
            self.check_drained()

    def take(self) -> list[Pending]:
        """The next batch: queued requests in order up to the row limit (one request when
        batching is off); requests whose client left are dropped, late ones answered 504."""
        batch: list[Pending] = []
        rows = 0
        now = time.time()
        while self.queue:
            pending = self.queue[0]
            if pending.cancelled:
                self.queue.popleft()
                pending.conn.pending.pop(pending.id, None)
                self.stats["dropped"] += 1
                continue
            if pending.deadline is not None and now > pending.deadline:
                self.queue.popleft()
                pending.conn.pending.pop(pending.id, None)
                self.stats["expired"] += 1
                self.reply_error(pending.conn, pending.id, MLRuntimeError(
                    "The request's deadline passed before the model could score it",
                    status=504, title="Gateway Timeout"))
                continue
            if batch and (not self.batching or rows + pending.rows > self.max_batch_rows):
                break
            batch.append(self.queue.popleft())
            rows += pending.rows
        return batch

    def compute(self, batch: list[Pending]) -> list[tuple[int, bytes, dict[str, Any]]]:
        """In the predict thread: the batch's predictions, each request's answer serialised."""
        started = time.monotonic()
        t0 = time.perf_counter()
        try:
            results = self.predict([p.parsed.frame for p in batch])
        except Exception:
            if len(batch) == 1:
                results = [self._failure(batch[0])]
            else:   # one request's rows failed the batch: each on its own, to find whose
                results = []
                for pending in batch:
                    try:
                        results.extend(self.predict([pending.parsed.frame]))
                    except Exception:
                        results.append(self._failure(pending))
        compute_ms = (time.perf_counter() - t0) * 1000
        total = sum(p.rows for p in batch)
        answers = []
        for pending, result in zip(batch, results):
            t1 = time.perf_counter()
            if isinstance(result, _Failed):
                status, body = result.status, result.body
            else:
                try:
                    status, body = 200, self.serialise(pending, result)
                except Exception as exc:
                    status, body = 500, problem(MLRuntimeError(
                        f"The model's answer cannot be written as JSON ({type(exc).__name__})"))
            answers.append((status, body, {
                "started": started, "compute_ms": compute_ms,
                "serialise_ms": (time.perf_counter() - t1) * 1000,
                "batch_rows": total, "batch_requests": len(batch), "first": not answers}))
        return answers

    def predict(self, frames: list[Any]) -> list[Any]:
        p = self.predictor
        if p.predict_many is not None:
            return p.predict_many(frames)
        if len(frames) == 1:
            return [p.predict(frames[0])]
        import pandas as pd

        combined = pd.concat(frames, ignore_index=True)
        result = p.predict(combined)
        if payloads.row_count(result) != len(combined):   # rows do not map back: one by one
            return [p.predict(frame) for frame in frames]
        return payloads.split_rows(result, [len(f) for f in frames])

    def _failure(self, pending: Pending) -> "_Failed":
        import traceback

        try:
            self.predict([pending.parsed.frame])
        except MLRuntimeError as exc:
            if 400 <= exc.status < 500:   # the engine refused these rows: the client's to fix
                return _Failed(exc.status, problem(exc))
            traceback.print_exc()
            return _Failed(500, problem(MLRuntimeError(f"The model failed: {exc.detail}")))
        except Exception as exc:
            traceback.print_exc()
            return _Failed(500, problem(MLRuntimeError(
                f"The model failed on these rows ({type(exc).__name__}); the host's log has "
                "the details")))
        return _Failed(500, problem(MLRuntimeError("The model failed only within a batch")))

    def serialise(self, pending: Pending, result: Any) -> bytes:
        if pending.protocol == "v2":
            return payloads.v2_answer(result, self.model_name, self.model_version,
                                      pending.parsed.request_id)
        return payloads.mlflow_answer(result)


@dataclass
class _Failed:
    status: int
    body: bytes


def check_servable(engine_cls: type[Engine]) -> None:
    """A PySpark engine or recipe is never served online: a 422 saying why."""
    if getattr(engine_cls, "kind", "python") == "pyspark":
        raise MLRuntimeError(
            f"Engine {engine_cls.name!r} is a PySpark engine: its models score Spark DataFrames "
            "in a Spark application, which cannot answer a request in milliseconds. Score it "
            "in batch (`run score`), or train a Python engine or recipe to serve online",
            status=422, title="Unprocessable Entity")


__all__ = ["HOST_FILE", "HostServer", "Loaded", "ModelHost", "check_servable", "ConfigError"]
