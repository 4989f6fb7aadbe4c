"""A Ray head (and worker nodes) of our own on free loopback ports, each with its own temporary
folder, stopped by its own process ids (never `ray stop`, which ends every Ray process on the
machine). Used by the Ray tests' fixtures and the benchmark. `python_without_runtime` makes the
Python a node runs when it must have Ray but nothing of this runtime."""
from __future__ import annotations

import os
import shutil
import site
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


def python_without_runtime(folder: Path) -> Path:
    """A venv whose site-packages point, through one .pth, at a mirror of this environment's
    site-packages less the runtime's distribution and editable-install hooks: Ray, pandas 2,
    pydantic... but no `runtime` and no `engines` (a cluster node's Python)."""
    folder.mkdir(parents=True, exist_ok=True)
    venv = folder / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True,
                   timeout=120)
    packages = next(Path(p) for p in site.getsitepackages() if (Path(p) / "pydantic").is_dir())
    mirror = folder / "mirror"
    mirror.mkdir()
    for entry in packages.iterdir():
        name = entry.name.lower()
        if name.startswith(("mlinstance_runtime", "__editable__")) or name.endswith(".pth"):
            continue
        (mirror / entry.name).symlink_to(entry)
    python = venv / "bin" / "python"
    venv_site = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()[0])"],
                               capture_output=True, text=True, check=True).stdout.strip()
    Path(venv_site, "mirror.pth").write_text(f"{mirror}\n")
    for tool in ("uv", "uvx"):   # Ray's `uv` runtime_env runs `python -m uv`, which finds these
        source = Path(sys.executable).with_name(tool)
        if source.exists():
            (venv / "bin" / tool).symlink_to(source)
    return python


_RAY_MAIN = "import sys; from ray.scripts.scripts import main; sys.exit(main())"


class RayHead:
    """`ray start --head --block` as our child, in its own session; every port is chosen here.
    `python` is the interpreter the node runs (default: this one), `env` extra variables."""

    def __init__(self, *, num_cpus: int = 2, memory_mb: int | None = None,
                 python: Path | None = None, env: dict[str, str] | None = None) -> None:
        self.num_cpus = num_cpus
        self.memory_mb = memory_mb
        self.python = python
        self.extra_env = dict(env or {})
        self.temp_dir = Path(tempfile.mkdtemp(prefix="rtray-", dir="/tmp"))  # socket paths stay short
        self.proc: subprocess.Popen | None = None
        self.gcs_port = self.dashboard_port = 0
        self.workers: list["RayHead"] = []

    @property
    def address(self) -> str:
        """The Jobs API address (the dashboard)."""
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _ray(self) -> list[str]:
        if self.python is None:
            return [str(Path(sys.executable).with_name("ray"))]
        return [str(self.python), "-c", _RAY_MAIN]

    def _popen(self, command: list[str]) -> None:
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", **self.extra_env}
        env.pop("RAY_ADDRESS", None)
        if self.python is not None:   # nothing of this environment's runtime on the node's path
            env.pop("PYTHONPATH", None)
            env["PATH"] = f"{Path(self.python).parent}{os.pathsep}{env.get('PATH', '')}"
        self._log = open(self.temp_dir / "node.log", "wb")
        self.proc = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True,
                                     cwd=self.temp_dir)

    def add_worker(self, *, num_cpus: int = 1, node_ip: str = "127.0.0.2") -> "RayHead":
        """A worker node joining this head: same Python, its own ports and temporary folder, and
        its own loopback address (Ray tells nodes apart by address: a worker node on the head's
        127.0.0.1 would have its processes read the head's session folder, its job logs too)."""
        worker = RayHead(num_cpus=num_cpus, python=self.python, env=self.extra_env)
        (node_manager, object_manager, agent_http, agent_grpc, runtime_env_agent, metrics,
         ) = free_ports(6)
        # A node's dashboard agent reads job logs under the head's temporary folder (on separate
        # machines both are /tmp/ray): the worker's session logs go there, the rest (its
        # runtime_env resources, sockets) stays in its own folder.
        session = (self.temp_dir / "session_latest").resolve().name
        (worker.temp_dir / session).mkdir()
        (worker.temp_dir / session / "logs").symlink_to(self.temp_dir / session / "logs",
                                                         target_is_directory=True)
        worker._popen([*worker._ray(), "start", "--address", f"127.0.0.1:{self.gcs_port}",
                       "--block", "--disable-usage-stats", "--node-ip-address", node_ip,
                       "--node-manager-port", str(node_manager),
                       "--object-manager-port", str(object_manager),
                       "--dashboard-agent-listen-port", str(agent_http),
                       "--dashboard-agent-grpc-port", str(agent_grpc),
                       "--runtime-env-agent-port", str(runtime_env_agent),
                       "--metrics-export-port", str(metrics), "--num-cpus", str(num_cpus),
                       "--num-gpus", "0", "--temp-dir", str(worker.temp_dir)])
        self.workers.append(worker)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if worker.proc.poll() is not None:
                raise RuntimeError(f"the Ray worker node exited with {worker.proc.returncode}: "
                                   f"{(worker.temp_dir / 'node.log').read_text()[-3000:]}")
            if self.alive_nodes() >= 1 + len(self.workers):
                return worker
            time.sleep(0.5)
        raise RuntimeError("the Ray worker node did not join the head in time")

    def alive_nodes(self) -> int:
        import json

        try:
            with urllib.request.urlopen(f"{self.address}/nodes?view=summary", timeout=5) as resp:
                summary = json.loads(resp.read())["data"]["summary"]
        except (OSError, ValueError, KeyError):
            return 0
        return sum(1 for node in summary if (node.get("raylet") or {}).get("state") == "ALIVE")

    def start(self) -> "RayHead":
        (self.gcs_port, self.dashboard_port, client, node_manager, object_manager, agent_http,
         agent_grpc, runtime_env_agent, metrics, worker_lo) = free_ports(10)
        command = [
            *self._ray(), "start", "--head", "--block", "--disable-usage-stats",
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
        self._popen(command)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                raise RuntimeError(f"ray start exited with {self.proc.returncode}: "
                                   f"{(self.temp_dir / 'node.log').read_text()[-3000:]}")
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
        for worker in self.workers:
            worker.stop()
        self.workers = []
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
