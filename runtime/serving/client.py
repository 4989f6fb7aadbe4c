"""The API process's side of a model host's socket: a few connections, each carrying many
requests at once (frames matched by id), and the cancel sent when a request's client left."""
from __future__ import annotations

import asyncio
import itertools
import socket
from dataclasses import dataclass
from typing import Any, Optional

from . import wire

CONNECTIONS = 2


@dataclass
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]
    timings: dict[str, Any]


class HostGone(ConnectionError):
    """The host closed its socket (it exited, or was drained)."""


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.waiting: dict[int, asyncio.Future] = {}
        self.closed = False
        self.task = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        try:
            while True:
                header, body = await wire.read_frame(self.reader)
                future = self.waiting.pop(header.get("id"), None)
                if future is not None and not future.done():
                    future.set_result(Answer(int(header.get("status", 500)), body,
                                             header.get("headers") or {},
                                             header.get("timings") or {}))
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, OSError):
            pass
        finally:
            self.closed = True
            for future in self.waiting.values():
                if not future.done():
                    future.set_exception(HostGone("the model host closed its socket"))
            self.waiting.clear()

    def close(self) -> None:
        self.closed = True
        self.task.cancel()
        try:
            self.writer.close()
        except Exception:
            pass


class HostClient:
    """Requests to one host over its abstract socket `name`, from one event loop."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._ids = itertools.count(1)
        self._conns: list[_Connection] = []
        self._next = 0
        self._lock: Optional[asyncio.Lock] = None

    async def _connection(self) -> _Connection:
        self._conns = [c for c in self._conns if not c.closed]
        if len(self._conns) < CONNECTIONS:
            if self._lock is None:
                self._lock = asyncio.Lock()
            async with self._lock:
                self._conns = [c for c in self._conns if not c.closed]
                if len(self._conns) < CONNECTIONS:
                    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    sock.setblocking(False)
                    try:
                        await asyncio.get_running_loop().sock_connect(sock, "\0" + self.name)
                    except OSError as exc:
                        sock.close()
                        if not self._conns:
                            raise HostGone(f"cannot reach the model host: {exc}") from None
                    else:
                        reader, writer = await asyncio.open_unix_connection(sock=sock)
                        self._conns.append(_Connection(reader, writer))
        self._next = (self._next + 1) % len(self._conns)
        return self._conns[self._next]

    async def call(self, header: dict[str, Any], body: bytes = b"",
                   timeout_s: Optional[float] = None) -> Answer:
        """Send one frame and wait for its answer; a cancelled wait (the client left) tells the
        host to drop the request."""
        conn = await self._connection()
        request_id = next(self._ids)
        future = asyncio.get_running_loop().create_future()
        conn.waiting[request_id] = future
        try:
            conn.writer.write(wire.frame({**header, "id": request_id}, body))
        except (ConnectionError, RuntimeError) as exc:
            conn.waiting.pop(request_id, None)
            raise HostGone(str(exc)) from None
        try:
            return await asyncio.wait_for(future, timeout_s) if timeout_s else await future
        except (asyncio.CancelledError, asyncio.TimeoutError):
            conn.waiting.pop(request_id, None)
            if not conn.closed:
                try:
                    conn.writer.write(wire.frame({"op": "cancel", "id": request_id}))
                except (ConnectionError, RuntimeError):
                    pass
            raise

    def close(self) -> None:
        for conn in self._conns:
            conn.close()
        self._conns = []
