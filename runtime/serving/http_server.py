"""A lean HTTP/1.1 server on an asyncio Protocol for `run serve-model`'s handful of routes: the
request parsed by httptools (uvicorn's parser), its route looked up in a dict, the answer written
in one `write`. No ASGI scope, receive/send messages or response objects a request: those were
about half of the API process's CPU a request for a model as quick as noop.

What it keeps of an HTTP server: keep-alive (an idle connection closes after IDLE_S), pipelined
requests answered in their order (reading pauses past PIPELINE unanswered ones, and while the
client does not read its answers), Content-Length and chunked bodies with a byte limit (413 as
soon as it is passed; `Expect: 100-continue` answered), HEAD answered without a body, a
malformed request a 400 that closes the connection, a client that leaves seen by the request it
left (`Exchange.disconnected`), and SIGTERM/SIGINT: stop listening, finish what is in flight (at
most SHUTDOWN_S), then the app's shutdown.

The app: `find(method, path) -> (handler, takes_body)`, a handler taking the Exchange and
returning (status, headers, body) or a coroutine of it; `startup()` and `shutdown()` coroutines.
"""
from __future__ import annotations

import asyncio
import http
import logging
import signal
import time
from collections import deque
from email.utils import formatdate
from typing import Any, Optional
from urllib.parse import unquote

import httptools

from ..errors import BadRequest, MLRuntimeError, PayloadTooLarge, ServerConfigError

log = logging.getLogger("runtime.serving")

IDLE_S = 5            # a keep-alive connection with nothing to do closes after this (uvicorn's)
PIPELINE = 32         # unanswered requests a connection may have before its reading pauses
SHUTDOWN_S = 10.0     # how long requests in flight may finish after SIGTERM
JSON = b"application/json"


def _status_line(status: int) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    return f"HTTP/1.1 {status} {phrase}\r\n".encode()


STATUS_LINES = {status: _status_line(status) for status in range(100, 600)}


def problem(exc: MLRuntimeError) -> tuple[int, dict[str, str], bytes]:
    import json

    return exc.status, {}, json.dumps(exc.to_body()).encode()


class Exchange:
    """One request and, once answered, its response's bytes."""

    __slots__ = ("method", "path", "content_type", "length", "expect", "keep_alive", "chunks",
                 "size", "error", "handler", "takes_body", "answer", "left", "done")

    def __init__(self) -> None:
        self.method, self.path = "GET", ""
        self.content_type = ""
        self.length: Optional[int] = None
        self.expect = False
        self.chunks: list[bytes] = []
        self.size = 0
        self.error: Optional[MLRuntimeError] = None
        self.handler: Any = None
        self.takes_body = False
        self.answer: Optional[bytes] = None
        self.left = False    # the client closed its connection before the answer
        self.done = False    # answered (before its body ended, for a refused one)

    @property
    def body(self) -> bytes:
        chunks = self.chunks
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def disconnected(self) -> bool:
        """Has the client left? (runtime.serving.service asks while an answer is slow.)"""
        return self.left


class Connection(asyncio.Protocol):
    def __init__(self, server: "HttpServer") -> None:
        self.server = server
        self.app = server.app
        self.max_bytes = server.max_bytes
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Exchange] = deque()   # requests not yet answered, in their order
        self.current: Optional[Exchange] = None
        self.url = b""
        self.transport: Any = None
        self.closed = False
        self.closing = False   # the server stops: close once what is in flight is answered
        self.paused = False          # reading paused: PIPELINE requests unanswered
        self.write_paused = False    # reading paused: the client does not read its answers
        self.served = 0        # requests read so far (the idle sweep compares it)
        self.swept = -1
        self.idle_sweeps = 0

    # --- the transport ---------------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.server.connections.add(self)

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        self.closed = True
        self.server.connections.discard(self)
        for exchange in self.queue:   # their answers have nobody to go to
            exchange.left = True
        if self.current is not None:
            self.current.left = True
        self.queue.clear()

    def pause_writing(self) -> None:
        self.write_paused = True
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        if not self.paused:
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:   # no protocol upgrades here: answer, then close
            self.transport.pause_reading()
            if self.queue:
                self.queue[-1].keep_alive = False
            elif not self.closed:
                self.transport.close()
        except httptools.HttpParserError as exc:
            self._malformed(exc)

    def _malformed(self, exc: Exception) -> None:
        """A request that is not HTTP/1.1 (in its head or its body): a 400 after the answers
        before it, then close."""
        exchange, self.current = self.current, None
        if exchange is None or exchange.done:   # none, or one already answered (a 413)
            exchange = Exchange()
            self.queue.append(exchange)
        elif exchange not in self.queue:   # its head was not whole
            self.queue.append(exchange)
        exchange.keep_alive = False
        self.transport.pause_reading()
        self.respond(exchange, *problem(BadRequest(f"Invalid HTTP request ({exc})")))

    # --- parser callbacks (httptools) ------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.current = Exchange()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-type":
            self.current.content_type = value.decode("latin-1")
        elif name == b"content-length":
            self.current.length = int(value) if value.isdigit() else None
        elif name == b"expect":
            self.current.expect = value.lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        exchange = self.current
        parser = self.parser
        exchange.method = parser.get_method().decode("latin-1")
        url = self.url
        if url[:1] != b"/" and url[:4].lower() == b"http":   # the absolute form
            url = httptools.parse_url(url).path or b"/"
        path = url.split(b"?", 1)[0].decode("latin-1")
        if "%" in path:
            path = unquote(path)
        exchange.path = path
        exchange.keep_alive = parser.should_keep_alive() and not self.closing
        queue = self.queue
        queue.append(exchange)
        try:
            exchange.handler, exchange.takes_body = self.app.find(exchange.method, path)
        except MLRuntimeError as exc:
            exchange.error = exc
        limit = self.max_bytes
        if exchange.takes_body and exchange.length is not None and exchange.length > limit:
            exchange.error = PayloadTooLarge(f"The request body of {exchange.length} bytes is "
                                             f"over the limit of {limit} bytes")
        if exchange.error is not None and exchange.takes_body:
            if exchange.expect:   # its body never comes: answer now, then close
                exchange.keep_alive = False
            self._refuse(exchange)   # now (a body sent anyway is read and dropped)
        elif exchange.expect and queue[0] is exchange:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if len(queue) >= PIPELINE and not self.paused:
            self.paused = True
            self.transport.pause_reading()

    def on_body(self, body: bytes) -> None:
        exchange = self.current
        if not exchange.takes_body or exchange.error is not None:
            return   # not read (a route without a body), or already refused
        exchange.size += len(body)
        if exchange.size > self.max_bytes:
            exchange.chunks = []
            exchange.error = PayloadTooLarge(f"The request body is over the limit of "
                                             f"{self.max_bytes} bytes")
            self._refuse(exchange)   # now; the rest of the body is read and dropped
            return
        exchange.chunks.append(body)

    def on_message_complete(self) -> None:
        exchange, self.current = self.current, None
        self.served += 1
        if exchange.done:
            return
        if exchange.error is not None:
            self._refuse(exchange)
            return
        try:
            result = exchange.handler(exchange)
        except MLRuntimeError as exc:
            result = problem(exc)
        if type(result) is tuple:
            self.respond(exchange, *result)
        else:
            self.server.loop.create_task(self._answer(exchange, result))

    # --- answers ---------------------------------------------------------------------------

    def _refuse(self, exchange: Exchange) -> None:
        if not exchange.done:
            self.respond(exchange, *problem(exchange.error))

    async def _answer(self, exchange: Exchange, pending: Any) -> None:
        try:
            status, headers, body = await pending
        except MLRuntimeError as exc:
            status, headers, body = problem(exc)
        except Exception as exc:   # never a traceback as a body; the log has it
            log.exception("Unhandled error on %s %s", exchange.method, exchange.path)
            status, headers, body = problem(MLRuntimeError(
                f"Internal error while serving {exchange.method} {exchange.path} "
                f"({type(exc).__name__}); the server log has the details"))
        self.respond(exchange, status, headers, body)

    def respond(self, exchange: Exchange, status: int, headers: dict[str, Any],
                body: bytes) -> None:
        """Answer `exchange`; what is answered at the head of the queue goes out in one write."""
        exchange.done = True
        if self.closed:
            return
        keep_alive = exchange.keep_alive and not self.closing
        exchange.keep_alive = keep_alive
        content_type = headers.pop("Content-Type", None) if headers else None
        parts = [STATUS_LINES.get(status) or _status_line(status),
                 b"content-type: ", content_type.encode("latin-1") if content_type else JSON,
                 b"\r\ncontent-length: ", b"%d" % len(body), b"\r\n", self.server.date]
        if headers:
            for name, value in headers.items():
                value = str(value)
                if "\r" in value or "\n" in value:
                    value = value.replace("\r", " ").replace("\n", " ")
                parts.append(f"{name.lower()}: {value}\r\n".encode("latin-1", "replace"))
        parts.append(b"\r\n" if keep_alive else b"connection: close\r\n\r\n")
        if exchange.method != "HEAD":
            parts.append(body)
        exchange.answer = b"".join(parts)
        queue = self.queue
        if not queue or queue[0] is not exchange:
            return   # an earlier request's answer goes first
        out = []
        close = False
        while queue and queue[0].answer is not None:
            done = queue.popleft()
            out.append(done.answer)
            if not done.keep_alive:
                close = True
                break
        self.transport.write(out[0] if len(out) == 1 else b"".join(out))
        if close or (self.closing and not queue and self.current is None):
            for dropped in queue:   # pipelined after a request that closes: never answered
                dropped.left = True
            queue.clear()
            self.transport.close()
            self.closed = True
            self.server.connections.discard(self)
        elif self.paused and len(queue) < PIPELINE:
            self.paused = False
            if not self.write_paused:
                self.transport.resume_reading()

    def shutdown(self) -> None:
        """Close now if nothing is in flight, else once it is answered."""
        self.closing = True
        if not self.queue and self.current is None and not self.closed:
            self.transport.close()
            self.closed = True
            self.server.connections.discard(self)


class HttpServer:
    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes
        self.connections: set[Connection] = set()
        self.date = b""
        self.loop: Any = None

    def _sweep(self) -> None:
        """Once a second: the Date header, and idle keep-alive connections closed."""
        self.date = b"date: " + formatdate(usegmt=True).encode() + b"\r\n"
        for conn in list(self.connections):
            if conn.queue or conn.current is not None or conn.served != conn.swept:
                conn.swept, conn.idle_sweeps = conn.served, 0
            else:
                conn.idle_sweeps += 1
                if conn.idle_sweeps >= IDLE_S:
                    conn.shutdown()
        self.sweeper = self.loop.call_later(1.0, self._sweep)

    async def serve(self, host: str, port: int, stop: Optional[asyncio.Event] = None) -> None:
        """Start the app, listen, and serve until SIGTERM or SIGINT (or `stop` is set); then
        stop listening, let the requests in flight finish and stop the app."""
        self.loop = loop = asyncio.get_running_loop()
        await self.app.startup()
        try:
            self._sweep()
            try:
                server = await loop.create_server(lambda: Connection(self), host, port,
                                                  backlog=2048, reuse_address=True)
            except OSError as exc:
                raise ServerConfigError(f"cannot listen on {host}:{port}: "
                                        f"{exc.strerror or exc}") from None
            if stop is None:
                stop = asyncio.Event()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
            await stop.wait()
            server.close()
            for conn in list(self.connections):
                conn.shutdown()
            until = time.monotonic() + SHUTDOWN_S
            while self.connections and time.monotonic() < until:
                await asyncio.sleep(0.05)
            for conn in list(self.connections):
                conn.transport.close()
            self.sweeper.cancel()
        finally:
            await self.app.shutdown()


def run(app: Any, host: str, port: int, max_bytes: int) -> None:
    """Serve `app` on uvloop's event loop where it is installed (uvicorn's `standard` extra
    brings it), asyncio's otherwise."""
    try:
        import uvloop
    except ImportError:
        runner = asyncio.Runner()
    else:
        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    with runner:
        runner.run(HttpServer(app, max_bytes).serve(host, port))
