"""`run serve` on a free loopback port with a given environment, stopped exactly as started."""
from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import httpx

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def start_server(home: Path, env: dict[str, str]) -> Iterator[str]:
    port = _free_port()
    log = open(home.parent / f"{home.name}-server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli.main", "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--home", str(home), "--log-level", "warning"],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/data/sensei"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                httpx.get(url + "/engines", timeout=1.0)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
