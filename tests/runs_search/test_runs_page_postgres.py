"""The runs page's JSON (/ui/api/runs) on a PostgreSQL registry: two real `run serve` processes on
one database, runs trained by the real `run train` against it; either server lists every run,
sorts, searches and charts them, `run runs list --filter` finds what the page finds, and a
malformed search is the same 400 as on SQLite."""
from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "web"))
from web_helpers import REPO, clean_env, noop_instance, start_server, stop_server, train  # noqa: E402


@pytest.fixture(scope="module")
def pg_url(pg_server) -> str:
    return pg_server.create_database("runs_page")


@pytest.fixture(scope="module")
def servers(pg_url, tmp_path_factory):
    root = tmp_path_factory.mktemp("pg-page")
    with ThreadPoolExecutor(2) as pool:   # both start at once (the second waits on no one)
        futures = [pool.submit(start_server, root / name, "--db", pg_url) for name in ("one", "two")]
    started = [f.result() for f in futures if f.exception() is None]
    try:
        for f in futures:
            if f.exception() is not None:
                raise f.exception()
        yield started
    finally:
        for server in started:
            stop_server(server.process)


@pytest.fixture(scope="module")
def trained(servers, pg_url):
    """Two noop runs (final loss 1/3 and 1/6), each trained from another home on the registry."""
    instance = noop_instance(servers[0].home.parent, "pg noop")
    short = train(servers[0].home, instance, "steps=3", options=("--db", pg_url))
    return {"short": short, "long": train(servers[1].home, instance, "steps=6", options=("--db", pg_url))}


def test_either_server_lists_every_run(servers, trained):
    short, long = trained["short"]["runId"], trained["long"]["runId"]
    for server in servers:
        page = httpx.get(server.url + "/ui/api/runs").json()
        assert page["total"] == 2 and [r["id"] for r in page["runs"]] == [long, short]
        assert {r["state"] for r in page["runs"]} == {"DONE"}
        assert page["runs"][0]["engine"]["name"] == "noop" and page["runs"][0]["mlInstance"]["name"] == "pg noop"
        assert page["columns"]["params"] == ["steps"] and "loss" in page["columns"]["metrics"]
        by_loss = httpx.get(server.url + "/ui/api/runs", params={"sort": "-metric.loss", "limit": 1}).json()
        assert by_loss["total"] == 2 and [r["id"] for r in by_loss["runs"]] == [short]
        assert by_loss["runs"][0]["metrics"]["loss"] == pytest.approx(1 / 3)
        found = httpx.get(server.url + "/ui/api/runs", params={
            "filter": "metrics.loss < 0.2 and params.steps = '6' and attributes.state = 'DONE'"}).json()
        assert [r["id"] for r in found["runs"]] == [long] and found["total"] == 1


def test_the_run_charts_its_steps_from_either_server(servers, trained):
    run = trained["long"]
    for server in servers:
        body = httpx.get(f"{server.url}/data/sensei/experiments/{run['experimentId']}/runs/"
                         f"{run['runId']}/metrics").json()
        assert body["series"]["loss"]["steps"] == [1, 2, 3, 4, 5, 6]
        assert body["series"]["loss"]["values"] == pytest.approx([1 / s for s in range(1, 7)])


def test_the_cli_finds_the_same_runs(servers, trained, pg_url):
    search = "metrics.loss < 0.2 and params.steps = '6'"
    done = subprocess.run([sys.executable, "-m", "runtime.cli.main", "runs", "list", "--filter", search,
                           "--json", "--home", str(servers[0].home), "--db", pg_url],
                          cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert [r["id"] for r in json.loads(done.stdout)] == [trained["long"]["runId"]]


def test_a_malformed_search_is_the_same_400(servers):
    bad = httpx.get(servers[1].url + "/ui/api/runs", params={"filter": "metrics.loss < and"})
    assert bad.status_code == 400
    body = bad.json()
    assert body["position"] == 16 and body["token"] == "and" and "a number" in body["expected"]
    assert {"type", "title", "status", "detail"} <= set(body)


def test_a_search_value_with_a_nul_byte_is_a_400_not_a_server_error(servers):
    bad = httpx.get(servers[1].url + "/ui/api/runs",
                    params={"filter": "params.learning_rate = 'a\x00b'"})
    assert bad.status_code == 400, bad.text
    assert "NUL byte" in bad.json()["detail"]
