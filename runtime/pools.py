"""The one pool protocol of warm workers, and their one idle/retire policy: warm python parents
(runtime.forkserver, found by runtime.warm) and warm Spark workers (runtime.spark.worker, found by
runtime.spark.pool) both listen on an abstract Unix socket named after the runtime home, their kind
and their key, and both speak JSON lines over it.

    discover  the sockets of a home (/proc/net/unix), by kind and key
    take      a python parent: {"op": "run", ...} forks one run; a Spark worker: {"op": "take"}
              holds the worker for one connection ({"busy": ...} when another holds it)
    release   a python run's end ({"exit": CODE}); a Spark worker: {"op": "release"} or closing
    retire    a worker takes nothing new and exits once its runs are over: after MAX_RUNS runs,
              after IDLE_S idle seconds, when its owner process is gone, or when asked to
    list      {"op": "ping"} -> {"pong": {"kind", "pid", "runs", "since", "idleSince", "home", ...}}
    stop      {"op": "shutdown"} -> {"bye": true}

One environment variable family sets it, for both kinds:

    MLRUNTIME_WARM           0/off: no warm workers; 1/on: CLI runs start ones that outlive them
    MLRUNTIME_WARM_IDLE_S    how long a worker a CLI run started waits for the next run (600 s)
    MLRUNTIME_WARM_MAX_RUNS  runs a worker serves before it retires (200)

Standard library only: the warm parent imports it and must stay light.
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

__all__ = ["ENV_IDLE_S", "ENV_MAX_RUNS", "ENV_WARM", "KINDS", "Lifetime", "WarmPolicy", "ask",
           "connect", "describe_home", "discover", "env_flag", "home_prefix", "key_hash", "kill_peer_of",
           "owner_arg", "parse_owner", "peer", "policy_for", "private_prefix", "process_policy",
           "socket_name", "stop_home"]

ENV_WARM = "MLRUNTIME_WARM"
ENV_IDLE_S = "MLRUNTIME_WARM_IDLE_S"
ENV_MAX_RUNS = "MLRUNTIME_WARM_MAX_RUNS"
DEFAULT_IDLE_S = 600.0
DEFAULT_MAX_RUNS = 200
KINDS = ("python", "spark", "r")     # r: warm R parents (runtime/recipes/r/warm.py)
PREFIX = "mlruntime-warm"
_PEERCRED = "3i"


# --- the policy --------------------------------------------------------------------------------

def env_flag() -> Optional[bool]:
    """MLRUNTIME_WARM: False (every run cold), True (CLI runs start warm workers) or None."""
    value = os.environ.get(ENV_WARM, "").strip().lower()
    if value in ("0", "off", "false", "no", "cold"):
        return False
    if value in ("1", "on", "true", "yes", "warm"):
        return True
    return None


def _env_number(name: str, default: float, kind: type) -> Any:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return kind(default)
    from .errors import ConfigError

    try:
        value = kind(float(raw)) if kind is int else kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number of {'runs' if kind is int else 'seconds'}"
                          ) from None
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must not be negative")
    return value


@dataclass(frozen=True)
class WarmPolicy:
    """Which warm workers a process uses and how long the ones it starts live.

    `home_root` None: a private pool (its workers are nobody else's and die with the process).
    `start`: may start a worker that others may use; `owned`: the workers it starts end with it
    (a server, a sweep), else they wait `idle_s` seconds for the next run (a CLI run's --warm)."""

    home_root: Optional[Path]
    start: bool
    owned: bool
    idle_s: float = field(default_factory=lambda: _env_number(ENV_IDLE_S, DEFAULT_IDLE_S, float))
    max_runs: int = field(default_factory=lambda: _env_number(ENV_MAX_RUNS, DEFAULT_MAX_RUNS, int)
                          or DEFAULT_MAX_RUNS)


def policy_for(home_root: Path, *, kind: str, flag: Optional[str] = None) -> Optional[WarmPolicy]:
    """The policy of a process of `kind` ("server", "sweep" or "cli") given its command's
    `--warm`/`--cold` (`flag` "warm", "cold" or None) and MLRUNTIME_WARM; None: every run cold.
    It becomes this process's policy (`process_policy`), which the Spark pool follows too."""
    global _process_policy
    if kind not in ("server", "sweep", "cli"):
        raise ValueError(f"unknown process kind {kind!r}: expected server, sweep or cli")
    env = env_flag()
    if flag == "cold" or (flag is None and env is False):
        policy = None
    elif kind in ("server", "sweep"):
        policy = WarmPolicy(Path(home_root), start=True, owned=True)
    else:
        policy = WarmPolicy(Path(home_root), start=flag == "warm" or env is True, owned=False)
    _process_policy = (True, policy)
    return policy


_process_policy: tuple[bool, Optional[WarmPolicy]] = (False, None)


def process_policy() -> tuple[bool, Optional[WarmPolicy]]:
    """(whether this process chose a policy, the policy: None when its runs are cold)."""
    return _process_policy


@dataclass
class Lifetime:
    """When a worker retires (both kinds): after `max_runs` runs, after `idle_s` seconds without a
    run (0: never), or when its owner process (pid, start ticks) is gone."""

    max_runs: int = DEFAULT_MAX_RUNS
    idle_s: float = 0.0
    owner: Optional[tuple[int, Optional[int]]] = None
    runs: int = 0
    idle_since: float = field(default_factory=time.time)
    _last_active: float = field(default_factory=time.monotonic)

    def touch(self) -> None:
        self._last_active = time.monotonic()

    def idle(self) -> None:
        self.touch()
        self.idle_since = time.time()

    def served(self) -> Optional[str]:
        """Count a run; why the worker now retires, or None."""
        self.runs += 1
        self.touch()
        return f"it served {self.runs} runs (max runs)" if self.runs >= self.max_runs else None

    def owner_gone(self) -> bool:
        if self.owner is None:
            return False
        from .procs import proc_start_ticks

        now = proc_start_ticks(self.owner[0])
        return now is None or (self.owner[1] is not None and now != self.owner[1])

    def why_retire(self, *, busy: bool) -> Optional[str]:
        if self.owner_gone():
            return "its owner process is gone"
        if self.idle_s and not busy and time.monotonic() - self._last_active > self.idle_s:
            return f"idle for {self.idle_s:g} s"
        return None

    def describe(self) -> dict[str, Any]:
        return {"runs": self.runs, "maxRuns": self.max_runs, "idleS": self.idle_s,
                "owner": self.owner[0] if self.owner else None, "idleSince": self.idle_since}


def parse_owner(text: Optional[str]) -> Optional[tuple[int, Optional[int]]]:
    """"PID:START" (what `owner_arg` writes) as (pid, start ticks or None)."""
    if not text:
        return None
    pid, _, start = text.partition(":")
    return int(pid), int(start) if start else None


def owner_arg() -> str:
    """This process as an owner: "PID:START"."""
    from .procs import proc_start_ticks

    me = os.getpid()
    return f"{me}:{proc_start_ticks(me) or ''}"


# --- names: discover -------------------------------------------------------------------------------

def home_prefix(home_root: Path) -> str:
    """The start of every socket name of this home."""
    home = hashlib.sha256(str(Path(home_root).resolve()).encode()).hexdigest()[:12]
    return f"{PREFIX}-{os.getuid()}-{home}-"


def private_prefix() -> str:
    """The start of the socket names of a private pool: no home's, so nobody else finds them."""
    return f"{PREFIX}-{os.getuid()}-p{os.getpid()}x{os.urandom(4).hex()}-"


def socket_name(home_root: Path, kind: str, key: str, slot: Optional[int] = None, *,
                prefix: Optional[str] = None) -> str:
    """The name a warm worker of `kind` and `key` listens on in this home (`prefix`: instead of
    the home's); Spark workers number their `slot`s: one run per worker, so one worker per slot."""
    if kind not in KINDS:
        raise ValueError(f"unknown warm worker kind {kind!r}: expected one of {', '.join(KINDS)}")
    start = prefix if prefix is not None else home_prefix(home_root)
    return start + f"{kind}-{key}" + (f"-{slot}" if slot is not None else "")


def key_hash(ident: Any) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def discover(prefix: str) -> list[str]:
    """The abstract socket names that start with `prefix` (from /proc/net/unix, where abstract
    names show with a leading @), listening ones only."""
    names = []
    try:
        with open("/proc/net/unix") as fh:
            next(fh, None)
            for line in fh:
                fields = line.split()
                # Flags 00010000: __SO_ACCEPTCON, a listening socket (a client's end shows too)
                if (len(fields) >= 8 and fields[-1].startswith("@" + prefix)
                        and fields[3] == "00010000" and fields[-1][1:] not in names):
                    names.append(fields[-1][1:])
    except OSError:
        pass
    return names


# --- list, stop ------------------------------------------------------------------------------------

def _pongs(home_root: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    for name in discover(home_prefix(home_root)):
        conn = connect(name)
        if conn is None:
            continue
        reply, _ = ask(conn, {"op": "ping"}, 5.0)
        conn.close()
        if reply and isinstance(reply.get("pong"), dict):
            yield name, reply["pong"]


def describe_home(home_root: Path) -> list[dict[str, Any]]:
    """What every warm worker of this home, of both kinds, says of itself (`run warm list`)."""
    out = []
    for name, pong in _pongs(home_root):
        rest = name[len(home_prefix(home_root)):]
        kind, _, key = rest.partition("-")
        out.append({"kind": kind, "key": key, "name": name, "home": str(home_root), **pong})
    return out


def stop_home(home_root: Path, *, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    """Ask every warm worker of this home to stop (`run warm stop`) and wait until each process
    is gone (a Spark worker finishes its run first); what was stopped ({kind, pid, gone})."""
    from .procs import proc_start_ticks

    asked = []
    for worker in describe_home(home_root):
        conn = connect(worker["name"])
        if conn is None:
            continue
        ticks = proc_start_ticks(worker["pid"])
        reply, _ = ask(conn, {"op": "shutdown"}, 5.0)
        conn.close()
        if reply and reply.get("bye"):
            asked.append((worker, ticks))
    deadline = time.monotonic() + timeout_s
    out = []
    for worker, ticks in asked:
        while time.monotonic() < deadline and ticks is not None \
                and proc_start_ticks(worker["pid"]) == ticks:
            time.sleep(0.05)
        gone = ticks is None or proc_start_ticks(worker["pid"]) != ticks
        out.append({"kind": worker["kind"], "pid": worker["pid"], "gone": gone})
    return out


# --- the socket ------------------------------------------------------------------------------------

def connect(name: str) -> Optional[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect("\0" + name)
    except OSError:
        sock.close()
        return None
    if peer(sock)[1] != os.getuid():   # someone else took the name: never hand them a run
        sock.close()
        return None
    return sock


def peer(conn: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a Unix socket (SO_PEERCRED)."""
    pid, uid, _gid = struct.unpack(_PEERCRED, conn.getsockopt(
        socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize(_PEERCRED)))
    return pid, uid


def ask(conn: socket.socket, message: dict[str, Any],
        timeout: float) -> tuple[Optional[dict[str, Any]], str]:
    """Send one request and read one reply line: (reply, "") or (None, what went wrong). Bytes
    after the line come back under "_rest"."""
    conn.settimeout(timeout)
    try:
        conn.sendall(json.dumps(message).encode() + b"\n")
        data = b""
        while b"\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return None, "it closed the connection"
            data += chunk
    except socket.timeout:
        return None, f"no reply within {timeout:g} s"
    except OSError as exc:
        return None, str(exc)
    line, _, rest = data.partition(b"\n")
    try:
        reply = json.loads(line)
    except ValueError:
        return None, "its reply is not JSON"
    if rest and isinstance(reply, dict):
        reply["_rest"] = rest.decode(errors="replace")
    return reply, ""


def kill_peer_of(conn: socket.socket) -> None:
    """A worker that accepts but does not answer is broken: kill it so the next run starts a new
    one (only a process of our own user, found through the socket's peer credentials)."""
    try:
        pid, uid = peer(conn)
    except OSError:
        return
    if uid == os.getuid() and pid > 0 and pid != os.getpid():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
