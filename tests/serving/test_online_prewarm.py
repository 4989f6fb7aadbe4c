"""A published Model's first online request on a real `run serve`: the server starts the warm
parent of the Model's environment and loads the Model in the background once it listens
(MLRUNTIME_ONLINE_PREWARM=models, the default), so that the first request is answered by a host
forked from that parent without waiting for either; a request that arrives during that start
waits for the same one; `off` keeps the lazy start on the first request. One noop Model and one
MLService for the module; each test starts its own server (the parents a server starts end with
it)."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from serving_helpers import Served, cli_env

ROWS = [{"x": 1, "y": 2}]
WAIT_S = 90.0   # bounds on waits for what the server does in the background, never a measurement


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    root = tmp_path_factory.mktemp("prewarm")
    home = root / "home"
    (root / "train.csv").write_text("x,y\n1,2\n3,4\n")
    (root / "noop.json").write_text(json.dumps({"name": "noop prewarm", "engineId": "noop",
        "tasks": [{"name": "train", "parameters": [
            {"key": "trainingDataSetId", "value": str(root / "train.csv")}]},
            {"name": "score", "parameters": []}]}))
    out = subprocess.run([sys.executable, "-m", "runtime.cli.main", "train",
                          str(root / "noop.json"), "--home", str(home), "--json"],
                         env=cli_env(), capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr + out.stdout
    run = json.loads(out.stdout.strip().splitlines()[-1])
    from runtime.home import resolve_home
    from runtime.mlservices import ServiceDesk
    from runtime.registry import Caller, Registry
    from runtime.schemas import EXPERIMENT, MLSERVICE

    registry = Registry.open(resolve_home(home))
    try:
        caller = Caller.local()
        experiment = registry.get(EXPERIMENT, caller, run["experimentId"])
        service = registry.create(MLSERVICE, caller, {
            "name": "prewarmed", "mlInstanceId": experiment["mlInstanceId"],
            "scoringDataSetId": str(root / "train.csv"), "scoringTimeframe": 60,
            "scoringSchedule": {"cron": "0 0 1 1 *"}})
        ServiceDesk(registry).publish(caller, service["id"], run["modelId"], "test")
    finally:
        registry.close()
    return {"root": root, "home": home, "model": run["modelId"], "service": service["id"]}


def _server(published, name: str, **env: str) -> Served:
    _until(lambda: not _parents(published["home"]), "the previous server's parents to end")
    return Served(published["home"], "serve", log=published["root"] / f"{name}.log",
                  env=cli_env(MLRUNTIME_SCHEDULER="off", **env), wait_s=60)


def _parents(home: Path) -> list[dict]:
    """What each warm parent listening for the home says of itself (runtime.forkserver)."""
    from runtime.pools import ask, connect
    from runtime.warm import listening

    found = []
    for name in listening(home):
        conn = connect(name)
        if conn is not None:
            reply, _ = ask(conn, {"op": "ping"}, 10.0)
            conn.close()
            if reply:
                found.append(reply["pong"])
    return found


def _loaded(base: str, model_id: str) -> bool:
    """Whether /metrics gives the Model's load time (set once its host answered)."""
    metrics = httpx.get(base + "/metrics").text
    return f'mlruntime_online_model_load_seconds{{model="{model_id}"}}' in metrics


def _hosts(published) -> set[Path]:
    return set((published["home"] / "serving").glob(f"{published['model']}-*"))


def _forked_from(host_dir: Path) -> int:
    """The warm parent a host's worker says it was forked from (runtime.worker's log line)."""
    for line in (host_dir / "worker.log").read_text().splitlines():
        if "warm start: forked from parent" in line:
            return int(line.split("forked from parent ")[1].split()[0])
    raise AssertionError(f"{host_dir / 'worker.log'} says no warm start")


def _until(check, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        assert time.monotonic() < deadline, f"waited {WAIT_S:g} s for {what}"
        time.sleep(0.1)


def _invoke(base: str, published) -> httpx.Response:
    return httpx.post(f"{base}/data/sensei/mlServices/{published['service']}/invocations",
                      json={"dataframe_records": ROWS}, timeout=60)


def test_a_published_model_is_loaded_before_its_first_request(published):
    before = _hosts(published)
    with _server(published, "models") as server:
        _until(lambda: _loaded(server.base, published["model"]),
               "the published Model to load without a request")
        (parent,) = _parents(published["home"])
        # what a noop host imports, and not the data set libraries its batch runs need
        assert {"engines.noop", "runtime.serving.host"} <= set(parent["preloaded"])
        assert "pandas" not in parent["preloaded"]
        (host,) = _hosts(published) - before
        assert _forked_from(host) == parent["pid"]

        sent = time.time()
        answer = _invoke(server.base, published)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": ROWS}
        assert answer.headers["X-Model-Id"] == published["model"]
        assert _hosts(published) - before == {host}   # the host loaded ahead answered
        assert parent["since"] < sent
    assert "MLRUNTIME_ONLINE_PREWARM=models" in (published["root"] / "models.log").read_text()


def test_a_request_during_the_start_waits_for_it_and_nothing_starts_twice(published):
    """`parents`: the first request as soon as the server answers waits for the parent the
    server is starting (not a second one) and is answered by a host forked from it. (A request
    while a host loads waits for that host: Serving.host, as any two first requests do.)"""
    before = _hosts(published)
    with _server(published, "parents", MLRUNTIME_ONLINE_PREWARM="parents") as server:
        answer = _invoke(server.base, published)
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": ROWS}
        (parent,) = _parents(published["home"])
        (host,) = _hosts(published) - before
        assert _forked_from(host) == parent["pid"]
        assert {"engines.noop", "runtime.serving.host"} <= set(parent["preloaded"])


def test_prewarm_off_starts_the_parent_on_the_first_request(published):
    before = _hosts(published)
    with _server(published, "off", MLRUNTIME_ONLINE_PREWARM="off") as server:
        time.sleep(1.0)   # longer than a prewarm takes to begin: it would have started by now
        assert _parents(published["home"]) == []
        assert not _loaded(server.base, published["model"])
        sent = time.time()
        answer = _invoke(server.base, published)
        assert answer.status_code == 200, answer.text
        (parent,) = _parents(published["home"])
        assert parent["since"] >= sent - 0.05   # started by that request
        (host,) = _hosts(published) - before
        assert _forked_from(host) == parent["pid"]


def test_the_setting_takes_three_values_and_refuses_others(monkeypatch):
    from runtime.errors import ConfigError
    from runtime.serving.hosts import ServingOptions

    assert ServingOptions().prewarm == "models"
    monkeypatch.setenv("MLRUNTIME_ONLINE_PREWARM", " Parents ")
    assert ServingOptions.from_env().prewarm == "parents"
    monkeypatch.setenv("MLRUNTIME_ONLINE_PREWARM", "sometimes")
    with pytest.raises(ConfigError, match="expected one of off, parents, models"):
        ServingOptions.from_env()
