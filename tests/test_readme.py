"""The README never lies: every command of its fenced shell blocks is run here.

Each shell block runs in a fresh sandbox that looks like a checkout (the repo's folders linked,
`configs/` copied, a runtime home of its own), so a block's commands run in order, as written,
the way a reader would paste them. What the harness changes, and why, is all in `rewrite`:
- ports (8765, 9000, `--port N`) become a free loopback port, and `--host 0.0.0.0` becomes
  127.0.0.1: tests never bind a fixed port or listen beyond loopback on a shared machine;
- `--home DIR` outside the sandbox becomes a folder inside it, and so do `~/.mlinstance-runtime`
  (the sandbox's home, given a registry first) and the shared mount `/mnt/team/...`;
- a PostgreSQL URL on `127.0.0.1:5432/mlruntime` names a fresh database of the suite's throwaway
  server instead (tests/pg_cluster.py; the block is skipped where none can start);
- UPPER_CASE placeholders (ENGINE_ID, MLINSTANCE_ID, ID) become the ids of objects the harness
  registered first from `configs/retail-sales.json`, as a reader would use their own ids;
  ENV_KEY becomes the key of the newest recipe environment (`run envs list --json`) at the moment
  the command runs.
Files the reader is assumed to have (`engine.yaml`, `instance.yaml`, `more.yaml`,
`configs/my-instance.json`) are written by `USER_FILES`. `run serve` commands are started, asked
for a page, and stopped with Ctrl-C (exit 0). `curl` commands go to a server the harness starts
on the sandbox. The two set-up commands are what .ci/run executes (checked below), and blocks
that need a Docker daemon are skipped when there is none, saying so.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from readme_commands import README, Command, commands, setup_commands

REPO = README.parent
VENV_BIN = Path(sys.executable).parent
PLACEHOLDERS = ("MLINSTANCE_ID", "SERVICE_ID", "ENGINE_ID", "ID")
LATE_PLACEHOLDERS = ("ENV_KEY",)   # looked up when the command runs

USER_FILES = {
    "engine.yaml": "name: Retail (plugin)\ntype: Python\nartifacts:\n  default:\n    image:\n"
                   "      location: retail-sales\n",
    "instance.yaml": json.dumps({"name": "Retail, renamed", "engineId": "ENGINE_ID",
                                 "tasks": [{"name": "train", "parameters": [
                                     {"key": "learning_rate", "value": "0.02"}]}]}),
    "more.yaml": "n_estimators: 2\nepochs: 2\n",
    "configs/my-instance.json": json.dumps({"name": "My instance", "engineId": "ENGINE_ID",
                                            "tasks": [{"name": "train", "parameters": [
                                                {"key": "learning_rate", "value": "0.05"}]}]}),
}


def _blocks() -> dict[int, list[Command]]:
    blocks: dict[int, list[Command]] = {}
    for cmd in commands():
        blocks.setdefault(cmd.block, []).append(cmd)
    return blocks


BLOCKS = _blocks()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Sandbox:
    """A folder that looks like a checkout, with its own runtime home and a free port."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.port = _free_port()
        root.mkdir(parents=True, exist_ok=True)
        for entry in REPO.iterdir():
            if entry.name.startswith(".") or entry.name in ("configs", "data", "out"):
                continue
            (root / entry.name).symlink_to(entry)
        shutil.copytree(REPO / "configs", root / "configs")
        self.env = {**os.environ, "MLRUNTIME_HOME": str(self.home),
                    "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
                    "PYTHONUNBUFFERED": "1"}
        for name in ("MLRUNTIME_ORG", "MLRUNTIME_SANDBOX", "MLRUNTIME_TOKENS", "RAY_ADDRESS"):
            self.env.pop(name, None)
        self.ids: dict[str, str] = {}
        self.server: subprocess.Popen | None = None
        self.pg_url: str | None = None   # the database a README PostgreSQL URL stands for

    def sh(self, command: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", "-c", command], cwd=self.root, env=self.env, text=True,
                              capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def prepare(self, block: list[Command]) -> None:
        """Data, the reader's own files and ids, as far as the block needs them."""
        text = " ".join(c.text for c in block)
        if ("configs/" in text or "data/retail/" in text) and "run data retail" not in block[0].text:
            self.check(self.sh("run data retail --out data/retail"), "run data retail")
        if any(re.search(rf"\b{p}\b", text) for p in PLACEHOLDERS):
            (self.root / "engine.yaml").write_text(USER_FILES["engine.yaml"])
            engine = json.loads(self.check(self.sh("run engines create engine.yaml --json"),
                                           "registering engine.yaml"))
            instance = json.loads((self.root / "configs/retail-sales.json").read_text())
            instance["engineId"] = engine["id"]
            (self.root / "reader-instance.json").write_text(json.dumps(instance))
            doc = json.loads(self.check(self.sh("run instances create reader-instance.json --json"),
                                        "registering configs/retail-sales.json's MLInstance"))
            self.ids = {"MLINSTANCE_ID": doc["id"], "ID": doc["id"], "ENGINE_ID": engine["id"]}
        for name, content in USER_FILES.items():
            for key, value in self.ids.items():
                content = re.sub(rf"\b{key}\b", value, content)
            (self.root / name).write_text(content)
        if "run db copy --from ~/" in text:   # the reader's home has a registry to copy
            self.check(self.sh("run engines create engine.yaml"), "registering engine.yaml")

    @staticmethod
    def check(proc: subprocess.CompletedProcess, what: str) -> str:
        assert proc.returncode == 0, (f"{what} exited {proc.returncode}\n--- stdout\n"
                                      f"{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}")
        return proc.stdout

    def rewrite(self, text: str) -> str:
        text = re.sub(r"127\.0\.0\.1:(8765|9000)\b", f"127.0.0.1:{self.port}", text)
        text = re.sub(r"--port \d+", f"--port {self.port}", text)
        text = text.replace("--host 0.0.0.0", "--host 127.0.0.1")
        text = re.sub(r"--home /\S+", f"--home {self.root / 'other-home'}", text)
        text = text.replace("~/.mlinstance-runtime", str(self.home))
        text = text.replace("/mnt/team/", f"{self.root / 'mnt-team'}/")
        if self.pg_url:
            text = text.replace("@127.0.0.1:5432/mlruntime", "@" + self.pg_url.split("@", 1)[1])
        for key in PLACEHOLDERS:   # longest first: ENGINE_ID before ID
            if key in self.ids:
                text = re.sub(rf"\b{key}\b", self.ids[key], text)
        if re.search(r"\bENV_KEY\b", text):
            envs = json.loads(self.check(self.sh("run envs list --json"), "run envs list"))["envs"]
            assert envs, f"{text}: no recipe environment to name (run envs list is empty)"
            newest = max(envs, key=lambda e: str(e.get("last_used") or e.get("created") or ""))
            text = re.sub(r"\bENV_KEY\b", newest["key"], text)
        return text

    # -- servers -------------------------------------------------------------------------------

    def start_server(self, command: str) -> subprocess.Popen:
        if re.match(r"^(\w+=\S+ )*run serve\b", command) and "--port" not in command:
            command += f" --port {self.port}"
        proc = subprocess.Popen(["bash", "-c", command], cwd=self.root, env=self.env,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"`{command}` exited {proc.returncode}:\n{proc.stdout.read()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return proc
            except OSError:
                time.sleep(0.2)
        self.stop_server(proc)
        raise AssertionError(f"`{command}` did not listen on port {self.port} within 60 s")

    @staticmethod
    def stop_server(proc: subprocess.Popen) -> int:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return proc.returncode

    def close(self) -> None:
        if self.server is not None:
            self.stop_server(self.server)
            self.server = None


@pytest.fixture
def sandbox(tmp_path):
    box = Sandbox(tmp_path / "checkout")
    yield box
    box.close()


def _is_serve(text: str) -> bool:
    return re.match(r"^(\w+=\S+ )*run serve\b", text) is not None


def _run_block(box: Sandbox, block: list[Command]) -> None:
    import httpx

    box.prepare(block)
    for cmd in block:
        text = box.rewrite(cmd.text)
        if _is_serve(text):
            server = box.start_server(text)
            response = httpx.get(f"http://127.0.0.1:{box.port}/data/sensei/engines", timeout=30)
            code = box.stop_server(server)
            assert response.status_code in (200, 401), f"{cmd}: GET /engines -> {response.status_code}"
            assert code == 0, f"{cmd}: exit {code} after Ctrl-C"
            continue
        if text.startswith("curl ") and box.server is None:
            box.server = box.start_server("run serve")
        proc = box.sh(text)
        out = box.check(proc, str(cmd))
        if text.startswith("curl "):
            assert not re.search(r'"status":\s*[45]\d\d', out), f"{cmd}: error body {out}"
            body = json.loads(out)
            if text.startswith("curl -X POST") and "/engines" in text:
                box.ids["ENGINE_ID"] = body["id"]
            if text.startswith("curl -X POST") and re.search(r"/mlServices\s", text):
                box.ids["SERVICE_ID"] = body["id"]   # the MLService a later command names


def _needs_docker(block: list[Command]) -> bool:
    return any(c.text.startswith("docker ") for c in block)


def _docker_daemon() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True).returncode == 0


def _spark(block: list[Command]) -> bool:
    return any("spark" in c.text for c in block)


# The Spark blocks (minutes of JVMs) run from tests/test_readme_spark.py, so that another test
# worker takes them while this one runs the rest.
RUNNABLE = [b for i, b in sorted(BLOCKS.items()) if i >= 2 and not _spark(b)]
SPARK_BLOCKS = [b for i, b in sorted(BLOCKS.items()) if i >= 2 and _spark(b)]


@pytest.mark.parametrize("block", RUNNABLE, ids=[f"line{b[0].line}" for b in RUNNABLE])
def test_readme_block_runs_as_written(block, sandbox, request):
    run_readme_block(block, sandbox, request)


def run_readme_block(block: list[Command], sandbox: Sandbox, request: Any) -> None:
    if _needs_docker(block) and not _docker_daemon():
        pytest.skip(f"README.md:{block[0].line}: the compose example needs a Docker daemon, and "
                    "this machine has none (tests/test_docker.py checks the compose file)")
    if not _needs_docker(block) and any("@127.0.0.1:5432/" in c.text for c in block):
        sandbox.pg_url = request.getfixturevalue("pg_server").create_database(
            f"readme_line{block[0].line}")
    if _spark(block):
        pytest.importorskip("pyspark", reason="the PySpark block needs pip install -e '.[spark]'")
    _run_block(sandbox, block)


def test_ci_runs_the_readme_setup_commands_as_written():
    """.ci/run executes the README's two set-up commands by extracting them, not a copy."""
    install, test = setup_commands()
    ci = (REPO / ".ci" / "run").read_text()
    assert 'eval "$(python3 tests/readme_commands.py setup)"' in ci
    assert 'eval "$(python3 tests/readme_commands.py test)"' in ci
    assert install.startswith("python3 -m venv .venv && . .venv/bin/activate")
    assert "pip install torch==2.13.0" in install and "run train" in install
    assert test.endswith("python -m pytest -q -n 3 --dist loadfile")


def test_the_readme_test_command_fails_when_it_collects_no_test(tmp_path):
    """Workers must not turn "nothing ran" into green: the README's pytest command, with the
    project's pytest settings, exits 5 (CI's `set -e` fails on it) on a folder without tests."""
    import shlex

    argv = shlex.split(setup_commands()[1].split("&&")[-1])
    assert argv[:3] == ["python", "-m", "pytest"], argv
    (tmp_path / "empty").mkdir()
    proc = subprocess.run([sys.executable, *argv[1:], "-c", str(REPO / "pyproject.toml"),
                           "-p", "no:cacheprovider", str(tmp_path / "empty")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 5, proc.stdout + proc.stderr


def test_command_parsing_keeps_quoted_hashes_and_joins_continuations():
    text = ("```sh\nrun a 'x # y' # comment\nrun b \\\n  --c d   # more\n```\n"
            "```python\nnot = 'a command'\n```\n")
    assert [c.text for c in commands(text)] == ["run a 'x # y'", "run b --c d"]


def test_urls_with_ampersands_are_quoted():
    """An unquoted `&` sends the rest of a curl line to the background."""
    for cmd in commands():
        unquoted = re.sub(r"'[^']*'|\"[^\"]*\"", "", cmd.text)
        assert not re.search(r"[^&]&[^&]", unquoted), f"{cmd}: quote the URL"
