"""Who asks: the caller's org, sandbox and user, and one page of a listing."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Optional

from ..listing import ListQuery
from ..store import Scope

DEFAULT_ORG = "local"
DEFAULT_SANDBOX = "prod"


@dataclass(frozen=True)
class Caller:
    """Who asks, and in which org and sandbox."""

    scope: Scope
    user_id: str
    display_name: Optional[str] = None

    @classmethod
    def local(cls, org: Optional[str] = None, sandbox: Optional[str] = None,
              user_id: Optional[str] = None) -> "Caller":
        return cls(Scope(org or os.environ.get("MLRUNTIME_ORG") or DEFAULT_ORG,
                         sandbox or os.environ.get("MLRUNTIME_SANDBOX") or DEFAULT_SANDBOX),
                   user_id or os.environ.get("MLRUNTIME_USER") or _os_user())


def _os_user() -> str:
    try:
        import getpass

        return getpass.getuser()
    except Exception:  # no user name on some containers
        return "local"


@dataclass(frozen=True)
class Page:
    children: list[dict[str, Any]]
    total: int
    query: ListQuery
