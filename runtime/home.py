"""The runtime home: where the registry store and the artifacts live.

Default `~/.mlinstance-runtime`; the `--home` flag or the MLRUNTIME_HOME environment variable
relocate it. The registry is the SQLite file in the home unless `--db URL` or MLRUNTIME_DB names
another store (`postgresql://user@host:port/db`, `sqlite:///path/registry.db`); several servers,
on several hosts, share a registry that way. MLRUNTIME_STORE is the older name of MLRUNTIME_DB.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import urlsplit, urlunsplit

ENV_HOME = "MLRUNTIME_HOME"
ENV_DB = "MLRUNTIME_DB"
ENV_STORE = "MLRUNTIME_STORE"   # the older name of MLRUNTIME_DB, still read
DEFAULT_HOME = Path("~/.mlinstance-runtime")


@dataclass(frozen=True)
class Home:
    root: Path
    store_url: str

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def runs(self) -> Path:
        return self.root / "runs"


def resolve_home(flag: Optional[str | Path] = None, *, db: Optional[str] = None) -> Home:
    """The home named by the flag, else by MLRUNTIME_HOME, else the default; its registry is
    `db`, else MLRUNTIME_DB (or MLRUNTIME_STORE), else the home's SQLite file."""
    root = Path(flag or os.environ.get(ENV_HOME) or DEFAULT_HOME).expanduser().resolve()
    store_url = (db or os.environ.get(ENV_DB) or os.environ.get(ENV_STORE)
                 or f"sqlite:///{root / 'registry.db'}")
    return Home(root=root, store_url=store_url)


def shown_url(url: str) -> str:
    """A store URL fit for a log line: its password, if any, replaced by ***."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.rpartition("@")
    user = netloc[0].partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[2]}"))
