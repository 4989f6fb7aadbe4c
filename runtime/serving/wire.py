"""The frames between the API process and a model host, over an abstract Unix socket: an 8-byte
prefix (header length, body length, big-endian), a JSON header, then the raw body. Requests carry
an `id`; answers come back with the same id, in any order (a connection carries many requests).

    client -> {"op": "infer", "id": N, "ct": CONTENT_TYPE, "protocol": "mlflow"|"v2",
               "deadline": EPOCH_S|null, "capture": bool}  + the request's body
           |  {"op": "cancel", "id": N}      the client left: drop it if it has not computed
           |  {"op": "info", "id": N}        -> the model's description, status 200
           |  {"op": "drain", "id": N}       take nothing new, answer what is queued, then exit
    host   -> {"id": N, "status": S, "headers": {...}, "timings": {...}} + the answer's body

Standard library only: both the API process and the host (in the model's environment) use it.
"""
from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

PREFIX = struct.Struct(">II")
MAX_HEADER = 1 << 20


def frame(header: dict[str, Any], body: bytes = b"") -> bytes:
    head = json.dumps(header, separators=(",", ":")).encode()
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
