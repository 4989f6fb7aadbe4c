"""Helpers of the online scoring tests (imported by name: a unique module name): a free loopback
port, the environment a CLI process gets, and a real `run serve` / `run serve-model` process
started on a free port, waited for until it answers, and stopped (by its pid) on exit."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli_env(**extra: str) -> dict[str, str]:
    """This process's environment without the runtime's own settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")}
    return {**env, **extra}


class Served:
    """`run ARGS... --port P --home HOME` (serve or serve-model) on a free port; entering waits
    until `probe` answers 200 (within `wait_s`), leaving stops exactly that process."""

    def __init__(self, home: Path, *args: str, log: Path, env: dict[str, str],
                 probe: str = "/v2/health/live", wait_s: float = 90.0) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.probe, self.wait_s = probe, wait_s
        self.log = open(log, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runtime.cli.main", *args, "--port", str(self.port),
             "--home", str(home)], stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def __enter__(self) -> "Served":
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"{self.proc.args[3]} exited (log: {self.log.name})"
            try:
                if httpx.get(self.base + self.probe, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise AssertionError(f"{self.proc.args[3]} did not answer {self.probe} within "
                             f"{self.wait_s:g} s (log: {self.log.name})")

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()
