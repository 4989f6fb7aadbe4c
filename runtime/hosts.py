"""Hosts sharing one registry: which host this process is, its heartbeat, and the runs of a host
that stopped answering.

Each host keeps a lease row `host:<id>` in the store, renewed by its processes' supervisors while
they serve or run runs. A server of another host fails the live runs of a host whose lease
expired ("host H stopped answering") and frees their ledger rows; never before the lease expires,
and never a run of a host whose lease is held (its own server adopts those when it restarts).
"""
from __future__ import annotations

import logging
import os
import socket
import time
from datetime import datetime, timezone
from typing import Any, Optional

from .errors import ConfigError, Conflict, NotFound
from .schemas import RunStatus
from .store import Scope

log = logging.getLogger("runtime.hosts")

ENV_HOST_ID = "MLRUNTIME_HOST_ID"
ENV_HOST_TTL_S = "MLRUNTIME_HOST_TTL_S"
DEFAULT_HOST_TTL_S = 30.0


def host_id() -> str:
    """This host's name in run owners and host leases: $MLRUNTIME_HOST_ID, else the hostname."""
    return os.environ.get(ENV_HOST_ID) or socket.gethostname()


def host_ttl_s() -> float:
    """How long a host may stay silent before another host's server fails its runs."""
    return env_seconds(ENV_HOST_TTL_S, DEFAULT_HOST_TTL_S)


def env_seconds(name: str, default: float) -> float:
    """A positive number of seconds from the environment variable `name`, else `default`."""
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise ConfigError(f"{name} must be a positive number of seconds, not {text!r}")
    return value


def lease_name(host: str) -> str:
    return f"host:{host}"


def owner_host(row: dict[str, Any]) -> Optional[str]:
    """The host that owns a ledger row (None: a row written before owners named their host)."""
    return ((row.get("owner") or {}).get("host")) or None


def on_host(row: dict[str, Any], host: str) -> bool:
    """Whether a ledger row belongs to `host` (a row that names no host counts as local)."""
    owner = owner_host(row)
    return owner is None or owner == host


class HostLease:
    """One process's part in its host's heartbeat and in the watch over the other hosts."""

    def __init__(self, registry: Any, host: Optional[str] = None,
                 ttl_s: Optional[float] = None) -> None:
        self.registry = registry
        self.host = host or host_id()
        self.ttl_s = host_ttl_s() if ttl_s is None else ttl_s
        self._beat_s = 0.0

    def beat(self, now: Optional[float] = None, *, force: bool = False) -> bool:
        """Renew this host's lease when a third of its TTL has passed; True when it was written.
        Every process of a host renews the same row (the holder is the host)."""
        now = time.time() if now is None else now
        if not force and now - self._beat_s < self.ttl_s / 3:
            return False
        # The holder is the host itself, so the lease is never "another holder's" to this host.
        self.registry.schedules.lease_acquire(lease_name(self.host), self.host, self.ttl_s, now)
        self._beat_s = now
        return True

    def lapsed(self, now: Optional[float] = None) -> bool:
        """Whether this host's own lease has expired (its processes were all gone a while): another
        host may have failed its runs meanwhile."""
        return self._expired_at(self.host, time.time() if now is None else now) is not None

    def reap(self, now: Optional[float] = None) -> list[str]:
        """Fail the live runs of every other host whose lease has expired and free their ledger
        rows; returns their ids. A host that never held a lease is left alone (it may predate
        host leases)."""
        now = time.time() if now is None else now
        others = {owner_host(row) for row in self.registry.ledger.rows()} - {None, self.host}
        failed: list[str] = []
        for host in sorted(others):
            if self._expired_at(host, now) is not None:
                failed += self._fail_host(host, now)
        return failed

    def _expired_at(self, host: str, now: float) -> Optional[float]:
        """When `host`'s lease expired; None while it holds (or when it never held one)."""
        held = self.registry.schedules.lease_holder(lease_name(host))
        if held is None or held[1] > now:
            return None
        return held[1]

    def _fail_host(self, host: str, now: float) -> list[str]:
        registry = self.registry
        failed: list[str] = []
        with registry.transaction():
            # Checked again inside the write: a host that renewed meanwhile keeps its runs.
            expired = self._expired_at(host, now)
            if expired is None:
                return []
            until = datetime.fromtimestamp(expired, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            message = (f"host {host} stopped answering: its host lease expired at {until} "
                       f"unrenewed; host {self.host} failed the run")
            rows = [row for row in registry.ledger.rows() if owner_host(row) == host]
            for row in rows:
                try:
                    registry.transition_run(Scope(row["org"], row["sandbox"]), row["run_id"],
                                            RunStatus.FAILED, message=message, scrub=False)
                except (Conflict, NotFound):
                    pass   # it ended already: only its row is left to free
                else:
                    failed.append(row["run_id"])
            registry.ledger.delete([row["run_id"] for row in rows])
        if failed:
            log.warning("Host %s stopped answering: %d run(s) failed (%s)", host, len(failed),
                        ", ".join(failed[:5]) + (" ..." if len(failed) > 5 else ""))
        return failed
