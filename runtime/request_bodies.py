"""Reading an HTTP request's body with a size limit (a 413 as soon as it passes the limit, never
read whole first): shared by the API's routes and the standalone model server."""
from __future__ import annotations

from typing import Any

from .errors import PayloadTooLarge


async def read_limited(request: Any, limit: int) -> bytes:
    """`request`: a Starlette Request. Its declared length is checked first, then what arrives."""
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"The request body of {int(length)} bytes is over the limit of "
                              f"{limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The request body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
