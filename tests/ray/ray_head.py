"""A Ray head of our own on free loopback ports, stopped by its own process ids (never `ray stop`,
which ends every Ray process on the machine). Used by the Ray tests' fixture and the benchmark."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

START_TIMEOUT_S = 90.0


def free_ports(count: int) -> list[int]:
    """`count` distinct free loopback ports (held open together, so they differ)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


def descendants(root: int) -> list[int]:
    """Every process below `root`, read from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class RayHead:
    """`ray start --head --block` as our child, in its own session; every port is chosen here."""

    def __init__(self, *, num_cpus: int = 2, memory_mb: int | None = None) -> None:
        self.num_cpus = num_cpus
        self.memory_mb = memory_mb
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rtray-", dir="/tmp"))  # socket paths stay short
        self.proc: subprocess.Popen | None = None
        self.gcs_port = self.dashboard_port = 0

    @property
    def address(self) -> str:
        """The Jobs API address (the dashboard)."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def start(self) -> "RayHead":
        (self.gcs_port, self.dashboard_port, client, node_manager, object_manager, agent_http,
         agent_grpc, runtime_env_agent, metrics, worker_lo) = free_ports(10)
        ray_exe = Path(sys.executable).with_name("ray")
        command = [
            str(ray_exe), "start", "--head", "--block", "--disable-usage-stats",
            "--node-ip-address", "127.0.0.1", "--port", str(self.gcs_port),
            "--include-dashboard", "true", "--dashboard-host", "127.0.0.1",
            "--dashboard-port", str(self.dashboard_port),
            "--ray-client-server-port", str(client), "--node-manager-port", str(node_manager),
            "--object-manager-port", str(object_manager),
            "--dashboard-agent-listen-port", str(agent_http),
            "--dashboard-agent-grpc-port", str(agent_grpc),
            "--runtime-env-agent-port", str(runtime_env_agent),
            "--metrics-export-port", str(metrics),
            "--num-cpus", str(self.num_cpus), "--num-gpus", "0",
            "--temp-dir", str(self.temp_dir)]
        if self.memory_mb:
            command += ["--memory", str(self.memory_mb << 20)]
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        self._log = open(self.temp_dir / "head.log", "wb")
        self.proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"ray start exited with {self.proc.returncode}: "
                                   f"{(self.temp_dir / 'head.log').read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(f"{self.address}/api/version", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            time.sleep(0.5)
        else:
            self.stop()
            raise RuntimeError(f"the Ray head did not answer at {self.address} in {START_TIMEOUT_S} s")
        self._wait_for_jobs_api()
        return self

    def _wait_for_jobs_api(self) -> None:
        # The dashboard answers before its job module and the node's agent are ready.
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.address}/api/jobs/", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the Jobs API at {self.address} did not come up")

    def descendants(self) -> list[int]:
        """Process ids under `ray start` (from /proc: psutil is only vendored inside ray)."""
        return descendants(self.proc.pid) if self.proc is not None else []

    def stop(self) -> None:
        """SIGTERM to `ray start --block` (it stops what it started), then SIGKILL to any process
        of ours left: its descendants as seen before, and its session (process group)."""
        if self.proc is None:
            return
        children = self.descendants()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_alive(pid) for pid in children):
            time.sleep(0.2)
        for pid in children:
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        self.proc = None

    def __enter__(self) -> "RayHead":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
