"""The frames between the API process and a model host, over an abstract Unix socket: an 8-byte
prefix (header length, body length, big-endian), a JSON header, then the raw body. Requests carry
an `id`; answers come back with the same id, in any order (a connection carries many requests).

    client -> {"op": "infer", "id": N, "ct": CONTENT_TYPE, "protocol": "mlflow"|"v2",
               "deadline": EPOCH_S|null, "capture": bool}  + the request's body
           |  {"op": "cancel", "id": N}      the client left: drop it if it has not computed
           |  {"op": "info", "id": N}        -> the model's description, status 200
           |  {"op": "drain", "id": N}       take nothing new, answer what is queued, then exit
    host   -> {"id": N, "status": S, "headers": {...}, "timings": {...}} + the answer's body

Both sides read frames in an asyncio Protocol (`FrameProtocol`): every frame that one read
brings is handled in that callback, with no task switch per frame, and what a side sends in one
turn of its event loop goes out in one write (`Outbox`): requests that arrive together reach the
host together, which is what lets it batch them.

Standard library only: both the API process and the host (in the model's environment) use it.
"""
from __future__ import annotations

import asyncio
import json
import json.scanner
import struct
from typing import Any, Callable, Optional

PREFIX = struct.Struct(">II")
MAX_HEADER = 1 << 20


def _not_json(value: Any) -> Any:
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def json_encoder(separators: tuple[str, str] = (",", ":"),
                 default: Callable[[Any], Any] = _not_json) -> Callable[[Any], str]:
    """json.dumps(value, separators=separators, default=default) without making an encoder each
    call (json's own `encode` does: a third of a small header's time). For values without
    cycles."""
    from json.encoder import c_make_encoder, encode_basestring_ascii

    if c_make_encoder is None:   # a Python without json's C speedups
        return json.JSONEncoder(separators=separators, default=default).encode
    item, key = separators
    encode = c_make_encoder(None, default, encode_basestring_ascii, None, key, item, False,
                            False, True)
    return lambda value: "".join(encode(value, 0))


def _decoder() -> Callable[[bytes], Any]:
    """json.loads of a header's bytes, without its encoding sniffing and trailing-space match
    (half of a small header's time); anything but one whole JSON value is a ValueError."""
    scan = json.scanner.make_scanner(json.JSONDecoder())

    def loads(raw: bytes) -> Any:
        text = raw.decode()
        try:
            value, end = scan(text, 0)
        except StopIteration:
            raise ValueError("frame header is not JSON") from None
        if end != len(text):
            raise ValueError("frame header is not one JSON value")
        return value
    return loads


_dumps = json_encoder()
_loads = _decoder()


def frame(header: dict[str, Any], body: bytes = b"") -> bytes:
    head = _dumps(header).encode()
    return PREFIX.pack(len(head), len(body)) + head + body


async def read_frame(reader: asyncio.StreamReader) -> tuple[dict[str, Any], bytes]:
    """The next frame; asyncio.IncompleteReadError when the peer closed."""
    prefix = await reader.readexactly(PREFIX.size)
    head_len, body_len = PREFIX.unpack(prefix)
    if head_len > MAX_HEADER:
        raise ValueError("frame header too long")
    head = await reader.readexactly(head_len)
    body = await reader.readexactly(body_len) if body_len else b""
    return json.loads(head), body


class Outbox:
    """Frames for one transport, written together once per turn of the event loop."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport, self.loop = transport, loop
        self.parts: list[bytes] = []

    def send(self, header: dict[str, Any], body: bytes = b"") -> None:
        if not self.parts:
            self.loop.call_soon(self.flush)
        head = _dumps(header).encode()
        self.parts.append(PREFIX.pack(len(head), len(body)) + head)
        if body:
            self.parts.append(body)

    def flush(self) -> None:
        parts, self.parts = self.parts, []
        if parts and not self.transport.is_closing():
            self.transport.write(b"".join(parts) if len(parts) > 1 else parts[0])


class FrameProtocol(asyncio.Protocol):
    """Calls `on_frame(header, body)` for each whole frame received, `on_read()` after the
    frames of one read, `on_close()` once."""

    def __init__(self, on_frame: Callable[[dict[str, Any], bytes], None],
                 on_close: Optional[Callable[[], None]] = None,
                 on_read: Optional[Callable[[], None]] = None) -> None:
        self.on_frame, self.on_close, self.on_read = on_frame, on_close, on_read
        self.buf = bytearray()
        self.transport: Optional[asyncio.Transport] = None
        self.outbox: Optional[Outbox] = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport   # type: ignore[assignment]
        self.outbox = Outbox(self.transport, asyncio.get_running_loop())

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        start, size = 0, len(buf)
        try:
            while size - start >= 8:
                head_len, body_len = PREFIX.unpack_from(buf, start)
                if head_len > MAX_HEADER:
                    raise ValueError("frame header too long")
                end = start + 8 + head_len + body_len
                if end > size:
                    break
                header = _loads(buf[start + 8:start + 8 + head_len])
                body = bytes(buf[start + 8 + head_len:end]) if body_len else b""
                start = end
                self.on_frame(header, body)
        except ValueError:
            self.transport.close()   # a peer that breaks the framing is dropped
            return
        finally:
            if start:
                del buf[:start]
        if start and self.on_read is not None:
            self.on_read()

    def connection_lost(self, exc: Optional[BaseException]) -> None:
        if not self.closed:
            self.closed = True
            if self.on_close is not None:
                self.on_close()

    def send(self, header: dict[str, Any], body: bytes = b"") -> None:
        if not self.closed and self.outbox is not None:
            self.outbox.send(header, body)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
