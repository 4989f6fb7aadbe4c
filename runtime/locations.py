"""Where a location string points on this machine: one reading of a plain path or a `file:` URI,
and one answer to whether a string is a path at all, for recipe artifacts, data sets and the data
roots alike."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional

from .errors import ConfigError

__all__ = ["ARCHIVE_SUFFIXES", "InvalidLocation", "local_path", "names_a_path"]

# The archives a recipe comes as (a folder needs no suffix).
ARCHIVE_SUFFIXES = (".zip", ".tar.gz", ".tgz", ".tar", ".egg", ".whl")


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


def names_a_path(text: str, suffixes: Iterable[str] = ()) -> bool:
    """Whether a location is written as a path rather than as a name (a data set id, an installed
    engine plugin, a `module:Class`): a URI (`file:` or another scheme), a path starting with `/`,
    `.` or `~`, one with a folder in it, one ending like the files the caller reads (`suffixes`,
    e.g. ARCHIVE_SUFFIXES), or one that exists here."""
    text = str(text).strip()
    if not text:
        return False
    return (text.startswith(("file:", "/", ".", "~")) or "://" in text or "/" in text
            or os.sep in text or text.lower().endswith(tuple(suffixes))
            or Path(text).expanduser().exists())
