"""The runtime home: where the registry store and the artifacts live.

Default `~/.mlinstance-runtime`; the `--home` flag or the MLRUNTIME_HOME environment variable
relocate it. MLRUNTIME_STORE may name another store URL (default: the SQLite file in the home).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

ENV_HOME = "MLRUNTIME_HOME"
ENV_STORE = "MLRUNTIME_STORE"
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


def resolve_home(flag: Optional[str | Path] = None) -> Home:
    """The home named by the flag, else by MLRUNTIME_HOME, else the default."""
    root = Path(flag or os.environ.get(ENV_HOME) or DEFAULT_HOME).expanduser().resolve()
    store_url = os.environ.get(ENV_STORE) or f"sqlite:///{root / 'registry.db'}"
    return Home(root=root, store_url=store_url)
