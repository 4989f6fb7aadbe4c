"""Secret parameter values masked in everything a run writes for people to read.

The worker receives secrets in clear (its engine needs them) and knows which keys are secret
(WorkerSpec.secret_keys). It installs a Redactor over its stdout and stderr — the run's log, that
`tasklogs` and the status's log tail serve — and scrubs result.json, so that neither the runtime's
own messages nor an engine that prints a secret by mistake puts it in a log, a run document or an
error detail.
"""
from __future__ import annotations

import io
import json
import logging
import sys
from typing import Any, Iterable, Mapping, Optional, TextIO

MASK = "********"
# Shorter values are not masked: replacing every "1" or "ab" in a log would hide the log, not a
# secret (and a secret that short is guessed anyway).
MIN_SECRET_CHARS = 3


def secret_values(values: Mapping[str, Any], keys: Iterable[str]) -> list[str]:
    """The clear text of each secret value (and of its string form, for numbers)."""
    found: list[str] = []
    for key in keys:
        value = values.get(key)
        if value is None:
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        found.append(str(value))
    return found


class Redactor:
    """Replaces each secret (longest first) with the mask."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        unique = {s for s in secrets if isinstance(s, str) and len(s) >= MIN_SECRET_CHARS}
        # Also the JSON-escaped form, for secrets with quotes or backslashes inside a JSON file.
        unique |= {json.dumps(s)[1:-1] for s in list(unique)}
        self.secrets = sorted(unique, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self.secrets)

    def text(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def document(self, doc: Any) -> Any:
        """A JSON-able document with every string scrubbed."""
        if not self.secrets:
            return doc
        if isinstance(doc, str):
            return self.text(doc)
        if isinstance(doc, dict):
            return {self.text(k) if isinstance(k, str) else k: self.document(v)
                    for k, v in doc.items()}
        if isinstance(doc, (list, tuple)):
            return [self.document(v) for v in doc]
        return doc


class RedactingStream(io.TextIOBase):
    """A text stream that scrubs what is written before passing it on."""

    def __init__(self, stream: TextIO, redactor: Redactor) -> None:
        self._stream = stream
        self._redactor = redactor

    def write(self, text: str) -> int:
        self._stream.write(self._redactor.text(text))
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        return self._stream.isatty()

    @property
    def encoding(self) -> str:   # type: ignore[override]
        return getattr(self._stream, "encoding", "utf-8")

    @property
    def buffer(self) -> Any:
        # Bytes written straight to the buffer bypass the redactor: hand out a scrubbing one.
        return _RedactingBuffer(self)


class _RedactingBuffer(io.RawIOBase):
    def __init__(self, text: RedactingStream) -> None:
        self._text = text

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._text.write(bytes(data).decode(self._text.encoding, errors="replace"))
        return len(data)

    def flush(self) -> None:
        self._text.flush()


_active: Optional[Redactor] = None


def install(redactor: Redactor) -> Redactor:
    """Scrub this process's stdout and stderr, and the logging handlers writing to them, from now
    on. Installing again (a pooled worker's next run) replaces the secrets; an empty Redactor
    leaves the streams as they are."""
    global _active
    _active = redactor
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, RedactingStream):
            stream._redactor = redactor
        elif redactor:
            wrapped = RedactingStream(stream, redactor)
            setattr(sys, name, wrapped)
            for handler in logging.getLogger().handlers:
                if isinstance(handler, logging.StreamHandler) and handler.stream is stream:
                    handler.setStream(wrapped)
    return redactor


def active() -> Redactor:
    """The redactor installed in this process (an empty one if none)."""
    return _active or Redactor()
