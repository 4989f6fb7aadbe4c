"""The HTTP/1.1 server of `run serve-model` (runtime.serving.http_server) on a free loopback port,
spoken to over raw sockets with a small app of its own (the routes' answers are the other
serving tests'): pipelined answers in their order, Content-Length and chunked bodies, the byte
limit (413 at once, the connection still usable), Expect: 100-continue, HEAD, a malformed request,
a client that leaves, unknown paths and methods as problem bodies, an idle connection closed,
and a stop that lets the request in flight finish. One server for the module (and one for the
stop); about three seconds."""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from contextlib import contextmanager

import pytest
from serving_helpers import free_port

from runtime.errors import MethodNotAllowed, NotFound
from runtime.serving.http_server import HttpServer

LIMIT = 1000


class App:
    def __init__(self) -> None:
        self.started = self.stopped = False
        self.left: list[bool] = []

    async def startup(self) -> None:
        self.started = True

    async def shutdown(self) -> None:
        self.stopped = True

    def find(self, method: str, path: str):
        routes = {"/echo": ("POST", self.echo), "/slow": ("POST", self.slow),
                  "/ping": ("GET", self.ping)}
        if path not in routes:
            raise NotFound(f"No such resource: {path}")
        allowed, handler = routes[path]
        if method != allowed:
            raise MethodNotAllowed(f"{method} is not allowed on {path}; allowed: {allowed}")
        return handler, method == "POST"

    def echo(self, exchange):
        return 200, {"Content-Type": "text/plain", "X-Type": exchange.content_type}, exchange.body

    def ping(self, exchange):
        return 200, {}, b"{}"

    async def slow(self, exchange):
        await asyncio.sleep(float(exchange.body))
        self.left.append(await exchange.disconnected())
        return 200, {}, exchange.body


@contextmanager
def running(app: App):
    """The server of `app` on its own event loop in a thread, stopped on exit."""
    port = free_port()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    thread = threading.Thread(target=loop.run_until_complete, daemon=True,
                              args=(HttpServer(app, LIMIT).serve("127.0.0.1", port, stop),))
    thread.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.02)
    try:
        yield {"app": app, "port": port, "loop": loop, "stop": stop, "thread": thread}
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(15)
        loop.close()


@pytest.fixture(scope="module")
def server():
    with running(App()) as served:
        yield served


def _connect(server) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server["port"]), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class Reader:
    """HTTP/1.1 answers read off a socket: (status, headers, body), or None once it closed."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, b""

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def answer(self, head_only: bool = False):
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                return None
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines[1:])
        length = 0 if head_only else int(headers.get("content-length", 0))
        while len(self.buf) < length:
            if not self._fill():
                return None
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(lines[0].split()[1]), headers, body


def post(path: str, body: bytes, *extra: str) -> bytes:
    head = "".join(f"{line}\r\n" for line in extra)
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
            f"Content-Length: {len(body)}\r\n{head}\r\n").encode() + body


def test_pipelined_requests_are_answered_in_their_order_on_one_connection(server):
    with _connect(server) as sock:
        sock.sendall(post("/slow", b"0.2") + b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
                     + post("/echo", b"third"))
        reader = Reader(sock)
        assert [reader.answer()[2] for _ in range(3)] == [b"0.2", b"{}", b"third"]
        # keep-alive: the same connection goes on
        sock.sendall(post("/echo", b"again"))
        status, headers, body = reader.answer()
        assert (status, body, headers["x-type"]) == (200, b"again", "text/csv")
        assert headers["content-type"] == "text/plain" and "date" in headers


def test_chunked_bodies_and_the_byte_limit(server):
    with _connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n")
        assert reader.answer()[:3:2] == (200, b"abcdefg")
        # a declared length past the limit: 413 at once; the body sent anyway is dropped
        sock.sendall(post("/echo", b"x" * (LIMIT + 1)))
        status, _, body = reader.answer()
        assert status == 413 and f"limit of {LIMIT} bytes" in json.loads(body)["detail"]
        # a chunked body passing the limit: 413 as it passes
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + f"{LIMIT + 1:x}\r\n".encode() + b"y" * (LIMIT + 1) + b"\r\n0\r\n\r\n")
        assert reader.answer()[0] == 413
        sock.sendall(post("/echo", b"still open"))
        assert reader.answer()[2] == b"still open"


def test_expect_100_continue(server):
    with _connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                     b"Expect: 100-continue\r\n\r\n")
        assert reader.answer()[0] == 100
        sock.sendall(b"body")
        assert reader.answer()[2] == b"body"
    with _connect(server) as sock:   # too long: refused before the body, and closed
        reader = Reader(sock)
        sock.sendall(f"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {LIMIT + 1}\r\n"
                     "Expect: 100-continue\r\n\r\n".encode())
        status, headers, _ = reader.answer()
        assert status == 413 and headers["connection"] == "close"
        assert reader.answer() is None


def test_problem_bodies_head_and_malformed_requests(server):
    with _connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = reader.answer()
        assert status == 404 and json.loads(body) == {
            "type": json.loads(body)["type"], "title": "Not Found", "status": 404,
            "detail": "No such resource: /nowhere"}
        sock.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, body = reader.answer()
        assert status == 405 and "allowed: POST" in json.loads(body)["detail"]
        sock.sendall(b"HEAD /ping HTTP/1.1\r\nHost: x\r\n\r\n" + post("/echo", b"after"))
        status, headers, _ = reader.answer(head_only=True)   # a length, and no body
        assert status == 405 and int(headers["content-length"]) > 0
        assert reader.answer()[2] == b"after"
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        status, headers, body = reader.answer()
        assert status == 400 and headers["connection"] == "close"
        assert json.loads(body)["status"] == 400
        assert reader.answer() is None


def test_a_client_that_left_is_seen_by_its_request(server):
    left = server["app"].left
    before = len(left)
    with _connect(server) as sock:
        sock.sendall(post("/slow", b"0.3"))
        time.sleep(0.05)
    deadline = time.monotonic() + 5
    while len(left) == before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert left[before:] == [True]


def test_a_stop_lets_the_request_in_flight_finish():
    with running(App()) as server, _connect(server) as sock:
        sock.sendall(post("/slow", b"0.3"))
        time.sleep(0.1)
        server["loop"].call_soon_threadsafe(server["stop"].set)
        reader = Reader(sock)
        status, headers, body = reader.answer()
        assert (status, body, headers["connection"]) == (200, b"0.3", "close")
        assert reader.answer() is None
        server["thread"].join(10)
        assert server["app"].started and server["app"].stopped


def test_an_idle_keep_alive_connection_is_closed(server, monkeypatch):
    from runtime.serving import http_server

    monkeypatch.setattr(http_server, "IDLE_S", 1)
    with _connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(post("/echo", b"once"))
        assert reader.answer()[2] == b"once"
        started = time.monotonic()
        assert reader.answer() is None   # closed by the server, within a couple of sweeps
        assert time.monotonic() - started < 4


def test_a_client_that_does_not_read_its_answers_is_not_read_either(server):
    """Pipelined requests from a client that never reads: the server stops reading them once its
    answers back up (a few MB of socket buffers, not all that is sent), and answers them all
    once the client reads."""
    cap = 64 << 20
    with _connect(server) as sock:
        big = post("/echo", b"z" * 900)
        stream = memoryview(big * 50)
        sock.setblocking(False)
        sent, stalled = 0, None
        while sent < cap:
            try:   # the stream goes on where the last (partial) send left it
                sent += sock.send(stream[sent % len(big):])
                stalled = None
            except BlockingIOError:   # the buffers are full: has the server stopped reading?
                if stalled is None:
                    stalled = time.monotonic()
                elif time.monotonic() - stalled > 0.5:
                    break
                time.sleep(0.01)
        assert sent < cap, "the server kept reading a client that never reads"
        sock.setblocking(True)
        reader = Reader(sock)
        for _ in range(sent // len(big)):
            assert reader.answer()[2] == b"z" * 900


def test_a_port_in_use_is_one_error_naming_it_and_the_app_is_stopped():
    from runtime.errors import ServerConfigError

    app = App()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
            asyncio.run(HttpServer(app, LIMIT).serve("127.0.0.1", port, asyncio.Event()))
    assert app.started and app.stopped


def test_a_body_that_breaks_its_chunked_framing_is_a_400_that_closes(server):
    with _connect(server) as sock:
        reader = Reader(sock)
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\nZZ not a chunk size\r\n")
        status, headers, body = reader.answer()
        assert status == 400 and headers["connection"] == "close"
        assert reader.answer() is None
