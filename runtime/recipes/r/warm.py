"""Warm R parents, the worker's side: an R run's worker asks the warm R parent of its key
(runtime/recipes/r/parent.R, listening on an abstract Unix socket of the pool protocol,
runtime.pools) to fork the run's R child, instead of starting Rscript cold.

The key: the Rscript, the R and Python libraries the child would load (R_LIBS,
RETICULATE_PYTHON, PYTHONPATH, LD_LIBRARY_PATH, LD_PRELOAD) and the parent's own source, within
one runtime home. Which process may start a parent, and how long it lives, is the run's warm
policy (runtime.pools), handed to the worker by its backend in MLRUNTIME_R_PARENT: a server's
or a sweep's parents end with it; a `--warm` CLI run's wait MLRUNTIME_WARM_IDLE_S seconds; a
plain CLI run uses one that is listening and starts none; a cold run (--cold, MLRUNTIME_WARM=0:
no MLRUNTIME_R_PARENT) starts Rscript. A run never waits for a parent to
start: it starts one in the background and runs cold itself; the runs after it are forked."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any, Mapping, Optional

from ... import pools

POLICY_ENV = "MLRUNTIME_R_PARENT"
KEY_ENV = ("R_LIBS", "RETICULATE_PYTHON", "PYTHONPATH", "LD_LIBRARY_PATH", "LD_PRELOAD")
HERE = Path(__file__).resolve().parent
PARENT = HERE / "parent.R"
REPLY_TIMEOUT_S = 30.0


def policy_env(warm: Any) -> dict[str, str]:
    """What a backend with warm pools (runtime.warm.WarmPools) hands its R runs' workers: may
    they start a parent, whose process it ends with (a server's, a sweep's), how long it idles
    and how many runs it serves (the one MLRUNTIME_WARM* policy)."""
    return {POLICY_ENV: json.dumps({
        "start": bool(warm.start), "owner": pools.owner_arg() if warm.owned else None,
        "idle_s": float(warm.idle_s), "max_runs": int(warm.max_runs)})}


def policy(env: Mapping[str, str]) -> dict[str, Any]:
    """The run's policy: {"start": bool, "owner", "idle_s", "max_runs"}."""
    try:
        value = json.loads(env.get(POLICY_ENV) or "{}")
    except ValueError:
        value = {}
    return value if isinstance(value, dict) else {}


def key_of(rscript: Path, env: Mapping[str, str]) -> str:
    source = hashlib.sha256(b"".join(p.read_bytes() for p in (PARENT, HERE / "warm_parent.py")))
    return pools.key_hash([os.path.realpath(rscript), source.hexdigest()[:12],
                           *[env.get(name, "") for name in KEY_ENV]])


class WarmRChild:
    """A run's R child, forked by the warm parent: `wait()` is its exit status, told over the
    run's connection (which, while open, keeps the child alive: closing it kills the child)."""

    def __init__(self, conn: socket.socket, reply: dict[str, Any]) -> None:
        self.conn = conn
        self.pid = int(reply["pid"])
        self.parent_pid = int(reply.get("parent") or 0)
        self.runs = int(reply.get("runs") or 0)
        self._rest = reply.get("_rest", "")
        self.stdout: Any = None      # the read end of the output pipe (the worker sets it)
        self.lost = False            # the parent went away before telling the child's end

    def wait(self) -> int:
        self.conn.settimeout(None)
        data = self._rest.encode()
        try:
            while b"\n" not in data:
                chunk = self.conn.recv(4096)
                if not chunk:
                    break
                data += chunk
        finally:
            self.conn.close()
        try:
            return int(json.loads(data.partition(b"\n")[0])["exit"])
        except (ValueError, KeyError, TypeError):
            # The parent went away before the child ended: nothing watches the child now, so
            # its group goes here (it leads its own session); the run fails.
            self.lost = True
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except OSError:
                pass
            return 70


def spawn(home_root: Path, rscript: Path, env: Mapping[str, str], request_path: Path,
          output_fd: int) -> tuple[Optional[WarmRChild], str]:
    """(the run's R child forked warm, "") or (None, why it runs cold). The child writes its
    output to `output_fd` (handed over the socket) and runs in `env` and this folder."""
    if POLICY_ENV not in env:      # a cold run (--cold, MLRUNTIME_WARM=0, no warm pools)
        return None, ""
    if not hasattr(socket, "send_fds") or not os.path.exists("/proc/net/unix"):
        return None, "warm R parents need Linux"
    key = key_of(rscript, env)
    name = pools.socket_name(home_root, "r", key)
    conn = pools.connect(name)
    if conn is None:
        rule = policy(env)
        if rule.get("start"):
            why = _start(home_root, rscript, env, name, key, rule)
            return None, why or "a warm R parent is starting for the runs after this one"
        return None, ""
    request = {"op": "run", "request": str(request_path), "env": dict(env), "cwd": os.getcwd(),
               "umask": _umask()}
    conn.settimeout(REPLY_TIMEOUT_S)
    try:
        socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], [output_fd])
    except OSError as exc:
        conn.close()
        return None, f"the warm R parent did not take the run ({exc})"
    reply, problem = _reply(conn, REPLY_TIMEOUT_S)
    if reply is None or "pid" not in reply:
        conn.close()
        return None, (problem or (reply or {}).get("retired") or (reply or {}).get("error")
                      or "the warm R parent refused the run")
    return WarmRChild(conn, reply), ""


def _reply(conn: socket.socket, timeout_s: float) -> tuple[Optional[dict[str, Any]], str]:
    conn.settimeout(timeout_s)
    data = b""
    try:
        while b"\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                return None, "the warm R parent closed the connection"
            data += chunk
    except OSError as exc:
        return None, f"no reply from the warm R parent ({exc})"
    line, _, rest = data.partition(b"\n")
    try:
        reply = json.loads(line)
    except ValueError:
        return None, "the warm R parent's reply is not JSON"
    reply["_rest"] = rest.decode(errors="replace")
    return reply, ""


def _start(home_root: Path, rscript: Path, env: Mapping[str, str], name: str, key: str,
           rule: dict[str, Any]) -> str:
    """Start the key's parent in the background (its own session; a second one of the same key
    loses the socket's name and exits). "" when it was started."""
    state = Path(home_root) / "warm"
    state.mkdir(parents=True, exist_ok=True)
    config = {"name": name, "owner": rule.get("owner"), "idle_s": rule.get("idle_s") or 0,
              "max_runs": rule.get("max_runs") or pools.DEFAULT_MAX_RUNS,
              "summary": f"{rscript}, Python {env.get('RETICULATE_PYTHON', '')}"}
    parent_env = {k: v for k, v in env.items() if k != POLICY_ENV}
    runtime_root = str(HERE.parents[2])       # `from runtime import pools` inside the parent
    path = parent_env.get("PYTHONPATH", "")
    if runtime_root not in path.split(os.pathsep):
        parent_env["PYTHONPATH"] = os.pathsep.join(filter(None, [path, runtime_root]))
    # One start at a time per key: the runs that come while a parent loads (seconds) run cold
    # rather than each start another one.
    starting = state / f"r-{key}.pid"
    try:
        pid = int(starting.read_text().split()[0])
        if str(PARENT).encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
            return f"a warm R parent of this key is starting or retiring (pid {pid})"
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(state / f"r-{key}.log", "ab") as log:
            proc = subprocess.Popen([str(rscript), "--no-save", "--no-restore", str(PARENT),
                                     json.dumps(config)], env=parent_env,
                                    stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True, cwd="/")
    except OSError as exc:
        return f"cannot start a warm R parent: {exc}"
    starting.write_text(f"{proc.pid}\n")
    return ""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
