"""The API process's side of a model host's socket: a few connections, each carrying many
requests at once (frames matched by id), and the cancel sent when a request's client left."""
from __future__ import annotations

import asyncio
import itertools
import socket
from dataclasses import dataclass
from typing import Any, Optional

from . import wire

# One connection: what a turn of the loop sends goes out in one write, and the host reads the
# requests that arrived together as one batch.
CONNECTIONS = 1


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]
    timings: dict[str, Any]


class HostGone(ConnectionError):
    """The host closed its socket (it exited, or was drained)."""


class _Connection:
    def __init__(self) -> None:
        self.waiting: dict[int, asyncio.Future] = {}
        self.protocol = wire.FrameProtocol(self._answer, self._lost)

    @property
    def closed(self) -> bool:
        return self.protocol.closed

    def _answer(self, header: dict[str, Any], body: bytes) -> None:
        future = self.waiting.pop(header.get("id"), None)
        if future is not None and not future.done():
            future.set_result(Answer(int(header.get("status", 500)), body,
                                     header.get("headers") or {}, header.get("timings") or {}))

    def _lost(self) -> None:
        for future in self.waiting.values():
            if not future.done():
                future.set_exception(HostGone("the model host closed its socket"))
        self.waiting.clear()

    def send(self, header: dict[str, Any], body: bytes = b"") -> None:
        if self.protocol.closed:
            raise HostGone("the model host closed its socket")
        self.protocol.send(header, body)

    def close(self) -> None:
        self.protocol.close()


class HostClient:
    """Requests to one host over its abstract socket `name`, from one event loop."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._ids = itertools.count(1)
        self._conns: list[_Connection] = []
        self._next = 0
        self._lock: Optional[asyncio.Lock] = None

    async def _connection(self) -> _Connection:
        if len(self._conns) == CONNECTIONS:
            self._next = (self._next + 1) % CONNECTIONS
            conn = self._conns[self._next]
            if not conn.closed:
                return conn
        return await self._connect()

    async def _connect(self) -> _Connection:
        self._conns = [c for c in self._conns if not c.closed]
        if len(self._conns) < CONNECTIONS:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                self._conns = [c for c in self._conns if not c.closed]
                if len(self._conns) < CONNECTIONS:
                    loop = asyncio.get_running_loop()
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    sock.setblocking(False)
                    try:
                        await loop.sock_connect(sock, "\0" + self.name)
                    except OSError as exc:
                        sock.close()
                        if not self._conns:
                            raise HostGone(f"cannot reach the model host: {exc}") from None
                    else:
                        conn = _Connection()
                        await loop.create_unix_connection(lambda: conn.protocol, sock=sock)
                        self._conns.append(conn)
        self._next = (self._next + 1) % len(self._conns)
        return self._conns[self._next]

    async def submit(self, header: dict[str, Any],
                     body: bytes = b"") -> tuple[_Connection, int, asyncio.Future]:
        """Send one frame; its answer's future (HostGone if the host goes away first)."""
        conn = await self._connection()
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        conn.waiting[request_id] = future
        header["id"] = request_id
        try:
            conn.send(header, body)
        except (ConnectionError, RuntimeError) as exc:
            conn.waiting.pop(request_id, None)
            raise HostGone(str(exc)) from None
        return conn, request_id, future

    @staticmethod
    def cancel(conn: _Connection, request_id: int) -> None:
        """The request's client left: the host drops it if it has not computed."""
        conn.waiting.pop(request_id, None)
        if not conn.closed:
            try:
                conn.send({"op": "cancel", "id": request_id})
            except (ConnectionError, RuntimeError):
                pass

    async def call(self, header: dict[str, Any], body: bytes = b"",
                   timeout_s: Optional[float] = None) -> Answer:
        """Send one frame and wait for its answer; a cancelled wait (the client left) tells the
        host to drop the request."""
        conn, request_id, future = await self.submit(dict(header), body)
        try:
            return await asyncio.wait_for(future, timeout_s) if timeout_s else await future
        except (asyncio.CancelledError, asyncio.TimeoutError):
            self.cancel(conn, request_id)
            raise

    def close(self) -> None:
        for conn in self._conns:
            conn.close()
        self._conns = []
