"""Where a location string points on this machine: one reading of a plain path or a `file:` URI,
for recipe artifacts, data sets and the data roots alike."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from .errors import ConfigError

__all__ = ["InvalidLocation", "local_path"]


class InvalidLocation(ConfigError):
    """A `file:` URI that names no file of this machine."""

    title, slug = "Invalid Location", "invalid-location"


def local_path(value: str) -> Optional[Path]:
    """The local path a plain path (`~` expanded, left relative if it is) or a `file:` URI names;
    None for a URI of another scheme (`s3://...`), which each caller refuses in its own words.

    A `file:` URI for another host (`file://server/x.csv`; `localhost` is this one) or with no
    path is an InvalidLocation: it names no file here."""
    text = str(value)
    if text.startswith("file:"):
        from urllib.parse import unquote, urlparse

        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise InvalidLocation(
                f"{text!r} names a file on the host {parsed.netloc!r}: only this machine's files "
                "are read here (a file URI is file:///absolute/path; a relative path is written "
                "without file:)")
        if not parsed.path:
            raise InvalidLocation(f"{text!r} names no path: a file URI is file:///absolute/path")
        return Path(unquote(parsed.path))
    if "://" in text:
        return None
    return Path(text).expanduser()
