"""Online scoring against a real `run serve` on a free loopback port: MLflow's payload formats,
each 4xx before the model runs, overload (503 with Retry-After), a client that left, the v2
protocol, metrics and request logs, and an MLService's publication swapped under load without a
failed request. One home and one server for the module; noop Models trained by `run train`."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from serving_helpers import Served, cli_env

SLOW_MS = 300
# A publication's new host starts, loads and warms up within this long even on a loaded machine
# (the benchmark measures how fast); load goes on AFTER_SWITCH_S after the first new answer.
SWITCH_S = 30.0
AFTER_SWITCH_S = 1.0
MAX_BYTES = 20_000


def _env(**extra: str) -> dict[str, str]:
    return cli_env(**extra)


def _run(home: Path, *args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "runtime.cli.main", *args, "--home", str(home),
                          "--json"], env=_env(), capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr + out.stdout
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def online(tmp_path_factory):
    root = tmp_path_factory.mktemp("online")
    home = root / "home"
    (root / "train.csv").write_text("x,y\n1,2\n3,4\n")
    config = {"name": "noop online", "engineId": "noop", "tasks": [
        {"name": "train", "parameters": [{"key": "trainingDataSetId",
                                          "value": str(root / "train.csv")}]},
        {"name": "score", "parameters": []}]}
    (root / "noop.json").write_text(json.dumps(config))
    slow = {**config, "name": "noop slow", "tasks": [
        config["tasks"][0], {"name": "score", "parameters": [{"key": "sleep_ms",
                                                              "value": str(SLOW_MS)}]}]}
    (root / "slow.json").write_text(json.dumps(slow))
    from runtime.home import resolve_home
    from runtime.mlservices import ServiceDesk
    from runtime.registry import Caller, Registry
    from runtime.schemas import EXPERIMENT, MLSERVICE

    first = _run(home, "train", str(root / "noop.json"))
    registry = Registry.open(resolve_home(home))
    caller = Caller.local()
    experiment = registry.get(EXPERIMENT, caller, first["experimentId"])
    second = _run(home, "train", experiment["mlInstanceId"])
    slow_run = _run(home, "train", str(root / "slow.json"))
    service = registry.create(MLSERVICE, caller, {
        "name": "online", "mlInstanceId": experiment["mlInstanceId"],
        "scoringDataSetId": str(root / "train.csv"), "scoringTimeframe": 60,
        "scoringSchedule": {"cron": "0 0 1 1 *"}})
    desk = ServiceDesk(registry)
    desk.publish(caller, service["id"], first["modelId"], "test")

    server = Served(home, "serve", log=root / "server.log",
                    env=_env(MLRUNTIME_ONLINE_MAX_QUEUE="4", MLRUNTIME_SCHEDULER="off",
                             MLRUNTIME_ONLINE_MAX_ROWS="50",
                             MLRUNTIME_ONLINE_MAX_BYTES=str(MAX_BYTES)), wait_s=30)
    base = server.__enter__().base
    try:
        yield {"base": base, "api": base + "/data/sensei", "home": home, "registry": registry,
               "caller": caller, "service": service["id"], "desk": desk,
               "first": first["modelId"], "second": second["modelId"],
               "slow": slow_run["modelId"]}
    finally:
        server.__exit__()
        registry.close()


class Until:
    """Load goes on until the new Model has answered for a while (or SWITCH_S passed)."""

    def __init__(self, new_model: str) -> None:
        self.new_model, self.stop = new_model, time.monotonic() + SWITCH_S

    def saw(self, model) -> None:
        if model == self.new_model and self.stop > time.monotonic() + AFTER_SWITCH_S:
            self.stop = time.monotonic() + AFTER_SWITCH_S

    def done(self) -> bool:
        return time.monotonic() >= self.stop


def _post(online, path, body, content_type="application/json", **kw):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return httpx.post(online["api"] + path, content=data,
                      headers={"Content-Type": content_type}, timeout=60, **kw)


def test_every_mlflow_payload_format_answers_predictions(online):
    path = f"/models/{online['first']}/invocations"
    expected = [{"x": 1, "y": 2}, {"x": 3, "y": 4}]
    bodies = [
        ({"dataframe_split": {"columns": ["x", "y"], "data": [[1, 2], [3, 4]]}}, None),
        ({"dataframe_records": expected}, None),
        ({"instances": expected}, None),
        ({"inputs": {"x": [1, 3], "y": [2, 4]}, "params": {"threshold": 1}}, None),
        ("x,y\n1,2\n3,4\n", "text/csv"),
    ]
    for body, content_type in bodies:
        answer = _post(online, path, body, content_type or "application/json")
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"predictions": expected}
        assert answer.headers["X-Model-Id"] == online["first"]
    # the MLService's route answers with its published Model and says so
    answer = _post(online, f"/mlServices/{online['service']}/invocations",
                   {"dataframe_records": expected})
    assert answer.status_code == 200
    assert answer.headers["X-Model-Id"] == online["first"]
    assert answer.headers["X-MLService-Id"] == online["service"]


def test_bad_input_is_a_4xx_that_says_what_to_send(online):
    path = f"/models/{online['first']}/invocations"
    unknown = _post(online, path, {"rows": [{"x": 1}]})
    assert unknown.status_code == 400
    assert "'rows'" in unknown.json()["detail"] and "dataframe_records" in unknown.json()["detail"]
    media = _post(online, path, "x=1", "application/x-www-form-urlencoded")
    assert media.status_code == 415
    assert "application/json" in media.json()["detail"] and "text/csv" in media.json()["detail"]
    too_many = _post(online, path, {"dataframe_records": [{"x": i} for i in range(51)]})
    assert too_many.status_code == 413 and "50 rows" in too_many.json()["detail"]
    too_big = _post(online, path, {"dataframe_records": [{"x": "y" * MAX_BYTES}]})
    assert too_big.status_code == 413 and f"{MAX_BYTES} bytes" in too_big.json()["detail"]
    for body in (b"{", b"", b"[1, 2]", b'{"dataframe_split": {"data": 3}}',
                 b'{"dataframe_records": [1]}', b'{"instances": 1}',
                 b'{"dataframe_records": [], "inputs": []}'):
        answer = _post(online, path, body)
        assert 400 <= answer.status_code < 500, (body, answer.text)
        assert answer.json()["status"] == answer.status_code
    assert _post(online, "/models/no-such-model/invocations", {"instances": []}).status_code == 404


def test_v2_inference_protocol(online):
    model = online["first"]
    assert httpx.get(online["base"] + "/v2/health/ready").json() == {"ready": True}
    assert httpx.get(online["base"] + f"/v2/models/{model}/ready").json()["ready"] is True
    answer = httpx.post(online["base"] + f"/v2/models/{model}/infer", json={
        "id": "r1", "inputs": [{"name": "x", "shape": [2], "datatype": "INT64", "data": [1, 3]},
                               {"name": "y", "shape": [2], "datatype": "FP64", "data": [2, 4]}]},
        timeout=30)
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    assert doc["id"] == "r1"
    assert {o["name"]: o["data"] for o in doc["outputs"]} == {"x": [1, 3], "y": [2.0, 4.0]}
    service = httpx.post(online["base"] + f"/v2/models/{online['service']}/infer", json={
        "inputs": [{"name": "x", "shape": [1], "datatype": "INT64", "data": [7]}]}, timeout=30)
    assert service.status_code == 200 and service.headers["X-Model-Id"] == online["first"]


def test_overload_is_a_503_with_retry_after_and_a_client_that_left_is_dropped(online):
    path = f"/models/{online['slow']}/invocations"
    assert _post(online, path, {"instances": [{"x": 1}]}).status_code == 200   # loaded
    answers = []

    def one():
        answers.append(_post(online, path, {"instances": [{"x": 1}]}))

    threads = [threading.Thread(target=one) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    statuses = sorted(a.status_code for a in answers)
    assert 503 in statuses and 200 in statuses, statuses
    refused = next(a for a in answers if a.status_code == 503)
    assert refused.headers["Retry-After"] == "1"
    # a client that leaves while its request waits: the request is logged as 499, never scored
    time.sleep(SLOW_MS / 1000 * 3)
    blocker = threading.Thread(target=one)
    blocker.start()
    time.sleep(0.05)
    with pytest.raises(httpx.TimeoutException):
        httpx.post(online["api"] + path, json={"instances": [{"x": 2}]}, timeout=0.1)
    blocker.join(30)
    time.sleep(0.3)
    lines = [json.loads(l) for l in
             (online["home"] / "serving" / "requests.jsonl").read_text().splitlines()]
    assert any(l["status"] == 499 and l["model"] == online["slow"] for l in lines)
    assert all("payload" not in l for l in lines)   # capture is off
    metrics = httpx.get(online["base"] + "/metrics").text
    assert f'mlruntime_online_requests_total{{model="{online["slow"]}",route="models/invocations",status="503"}}' in metrics
    assert 'phase="compute"' in metrics and "mlruntime_online_batch_rows_bucket" in metrics
    assert "mlruntime_online_model_load_seconds" in metrics


def test_a_publication_swaps_models_under_load_without_a_failed_request(online):
    path = f"/mlServices/{online['service']}/invocations"
    assert _post(online, path, {"instances": [{"x": 1}]}).headers["X-Model-Id"] == online["first"]
    seen: list[tuple[float, int, str]] = []
    until = Until(online["second"])

    def load():
        with httpx.Client(timeout=30) as client:
            while not until.done():
                sent = time.monotonic()   # a request sent after the switch gets the new Model
                answer = client.post(online["api"] + path, json={"instances": [{"x": 1}]})
                seen.append((sent, answer.status_code,
                             answer.headers.get("X-Model-Id")))
                until.saw(answer.headers.get("X-Model-Id"))

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    published_at = time.monotonic()
    online["desk"].publish(online["caller"], online["service"], online["second"], "test swap")
    for t in threads:
        t.join(SWITCH_S + 30)
    assert seen and all(status == 200 for _, status, _ in seen), \
        sorted({s for _, s, _ in seen})
    assert {model for _, _, model in seen} == {online["first"], online["second"]}
    first_new = min(t for t, _, model in seen if model == online["second"])
    assert first_new - published_at < SWITCH_S
    # once switched, the route never goes back to the old Model
    assert all(model == online["second"] for t, _, model in seen if t > first_new + 0.05)
    traffic = httpx.get(online["api"] + "/online/traffic").json()["services"][online["service"]]
    assert traffic["requests"] >= len(seen) and traffic["errors"] == 0
    assert traffic["modelId"] == online["second"] and traffic["p50Ms"] > 0


def ServeModel(online, target: str, *options: str) -> Served:
    """`run serve-model TARGET` on a free port of the module's home, stopped on exit."""
    return Served(online["home"], "serve-model", target, *options, probe="/ping",
                  log=online["home"].parent / f"serve-model-{target[:8]}.log", env=_env())


def test_serve_model_follows_a_publication_and_speaks_v2(online):
    """MLflow's root contract and v2 on `run serve-model SERVICE`, which switches to the Model the
    MLService publishes next while requests keep coming, none of them failing."""
    current = online["desk"].published_model(online["caller"].scope, online["service"])["id"]
    new = online["second"] if current == online["first"] else online["first"]
    rows = [{"x": 1, "y": 2}]
    with ServeModel(online, online["service"], "--max-bytes", "4096") as server:
        assert httpx.get(server.base + "/health").status_code == 200
        assert httpx.get(server.base + "/version").json()["target"] == online["service"]
        answer = httpx.post(server.base + "/invocations", json={"dataframe_records": rows})
        assert answer.status_code == 200 and answer.json() == {"predictions": rows}
        assert answer.headers["X-Model-Id"] == current
        big = httpx.post(server.base + "/invocations", content=b"x" * 5000,
                         headers={"Content-Type": "text/csv"})
        assert big.status_code == 413 and "4096 bytes" in big.json()["detail"]

        name = online["service"]
        assert httpx.get(server.base + "/v2/health/live").json() == {"live": True}
        assert httpx.get(server.base + f"/v2/models/{name}/ready").json()["ready"] is True
        assert httpx.get(server.base + f"/v2/models/{name}").json()["name"] == name
        assert httpx.get(server.base + "/v2/models/another/ready").status_code == 404
        inferred = httpx.post(server.base + f"/v2/models/{name}/infer", json={
            "inputs": [{"name": "x", "shape": [2], "datatype": "INT64", "data": [5, 6]}]})
        assert inferred.status_code == 200, inferred.text
        assert inferred.json()["outputs"][0] == {"name": "x", "shape": [2], "datatype": "INT64",
                                                 "data": [5, 6]}

        seen: list[tuple[float, int, str]] = []
        until = Until(new)

        def load():
            with httpx.Client(timeout=30) as client:
                while not until.done():
                    sent = time.monotonic()
                    got = client.post(server.base + "/invocations",
                                      json={"dataframe_records": rows})
                    seen.append((sent, got.status_code, got.headers.get("X-Model-Id")))
                    until.saw(got.headers.get("X-Model-Id"))

        threads = [threading.Thread(target=load) for _ in range(3)]
        for t in threads:
            t.start()
        time.sleep(0.7)
        published_at = time.monotonic()
        online["desk"].publish(online["caller"], online["service"], new, "serve-model swap")
        for t in threads:
            t.join(SWITCH_S + 30)
    assert seen and all(status == 200 for _, status, _ in seen), sorted({s for _, s, _ in seen})
    assert {model for _, _, model in seen} == {current, new}
    first_new = min(t for t, _, model in seen if model == new)
    assert first_new - published_at < SWITCH_S
    assert all(model == new for t, _, model in seen if t > first_new + 0.05)


def test_a_request_past_its_deadline_is_a_504(online):
    """The slow Model computes one request (300 ms) while the next ones wait past their 200 ms
    deadline: those are answered 504 before the model runs, never scored late. A client that
    leaves while its request waits is logged 499 by serve-model's own scoring route."""
    with ServeModel(online, online["slow"], "--timeout-s", "0.2", "--no-batching") as server:
        answers: list[httpx.Response] = []

        def one():
            answers.append(httpx.post(server.base + "/invocations",
                                      json={"instances": [{"x": 1}]}, timeout=30))

        threads = [threading.Thread(target=one) for _ in range(3)]
        for t in threads:
            t.start()
            time.sleep(0.02)
        for t in threads:
            t.join(30)
        blocker = threading.Thread(target=one)
        blocker.start()
        time.sleep(0.05)
        with pytest.raises(httpx.TimeoutException):
            httpx.post(server.base + "/invocations", json={"instances": [{"x": 2}]}, timeout=0.1)
        blocker.join(30)
        time.sleep(0.5)   # request log lines are written every 0.2 s
    statuses = sorted(a.status_code for a in answers)
    assert statuses[0] == 200 and 504 in statuses, statuses
    late = next(a for a in answers if a.status_code == 504)
    assert late.json()["status"] == 504 and "deadline" in late.json()["detail"]
    lines = [json.loads(line) for line in
             (online["home"] / "serving" / "requests.jsonl").read_text().splitlines()]
    assert any(line["status"] == 499 and line["route"] == "invocations"
               and line["model"] == online["slow"] for line in lines)


def test_garbage_bodies_are_never_a_5xx(online):
    from online_fuzz import encoded, mlflow_bodies, never_a_5xx, v2_bodies

    model = online["first"]
    with httpx.Client(timeout=30) as client:
        def post(path):
            return lambda body, content_type: client.post(
                online["base"] + path, content=body, headers={"Content-Type": content_type})

        never_a_5xx(post(f"/data/sensei/models/{model}/invocations"),
                    encoded(mlflow_bodies(["x", "y"])))
        never_a_5xx(post(f"/v2/models/{model}/infer"), encoded(v2_bodies(["x", "y"])))
