"""A real `run serve` process on a free loopback port, for the HTTP suite.

The server is started once per session (the auth tests start their own, with a token) and each
test works in its own sandbox, so tests never see each other's objects and can run in any order.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import httpx
import pytest

from contract import repo_root

BASE_PATH = "/data/sensei"
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
# The session server's JSON body limit, set with --max-body-mb (the default is 1 MiB).
MAX_BODY_MB = 0.25
MAX_BODY_BYTES = int(MAX_BODY_MB * (1 << 20))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env() -> dict[str, str]:
    """This environment without the runtime's own variables, so a developer's setup cannot leak in."""
    return {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")}


def serve_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "runtime.cli.main", "serve", *args]


@dataclass
class LiveServer:
    base_url: str          # http://127.0.0.1:PORT
    home: Path
    process: subprocess.Popen
    log_path: Path

    @property
    def api_url(self) -> str:
        return self.base_url + BASE_PATH

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


@contextlib.contextmanager
def live_server(home: Path, *extra_args: str,
                env: Optional[dict[str, str]] = None) -> Iterator[LiveServer]:
    """`run serve` on 127.0.0.1 and a free port; stops exactly the process it started. `env`:
    runtime variables of its own (MLRUNTIME_HOST_ID, ...), on top of a clean environment."""
    home.mkdir(parents=True, exist_ok=True)
    log_path = home.parent / f"{home.name}-server.log"
    attempts = 3   # another process may grab the free port between the probe and the bind
    for attempt in range(attempts):
        port = free_port()
        base_url = f"http://127.0.0.1:{port}"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                serve_command("--host", "127.0.0.1", "--port", str(port), "--home", str(home),
                              "--log-level", "warning", *extra_args),
                cwd=repo_root(), env={**server_env(), **(env or {})}, stdout=log,
                stderr=subprocess.STDOUT)
        server = LiveServer(base_url, home, process, log_path)
        try:
            if _wait_until_up(server):
                break
        except BaseException:
            _stop(process)
            raise
        _stop(process)
        if attempt == attempts - 1 or "address already in use" not in server.output().lower():
            pytest.fail(f"The server did not come up on {base_url} (exit code "
                        f"{process.returncode}; waited up to {START_TIMEOUT_S} s). Its output:\n"
                        f"{server.output()}")
    try:
        yield server
    finally:
        _stop(process)


def _wait_until_up(server: LiveServer) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            return False
        try:
            # Any answer means the app is serving; a token server answers 401 here.
            httpx.get(server.api_url + "/engines", timeout=1.0)
            return True
        except httpx.TransportError:
            time.sleep(0.05)
    return False


def new_sandbox() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def sensei_client(api_url: str, sandbox: str, *, token: Optional[str] = "local-token",
                  org: str = "TESTORG@AdobeOrg", api_key: str = "test-api-key") -> httpx.Client:
    """A client sending the headers every Sensei call carries."""
    headers = {"x-api-key": api_key, "x-gw-ims-org-id": org, "x-sandbox-name": sandbox}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.Client(base_url=api_url, headers=headers, timeout=30.0)
