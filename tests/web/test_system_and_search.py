"""System metrics, the search language and the sweep pictures on a real `run serve`, with a real
10-trial `run sweep` and a real retail-sales `run train`, read by the CLI, the JSON and a headless
Chromium. One sweep and one retail run serve the whole module."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from web_helpers import REPO, TRAINING_CSV, clean_env, train

SEARCH = "metrics.loss < 0.2 and params.steps != '9' and attributes.state = 'DONE'"


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "runtime.cli.main", *args, "--home", str(home)],
                          cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=300)
    return done


@pytest.fixture(scope="module")
def sweep(server, tmp_path_factory) -> dict:
    """`run sweep` of the noop engine over steps 1..10 (final loss 1/steps) on a tiny data set."""
    folder = tmp_path_factory.mktemp("sweep")
    (folder / "tiny.csv").write_text("a,b\n1,2\n3,4\n")
    instance = folder / "sweep.json"
    instance.write_text(json.dumps({"name": "sweep noop", "engineId": "noop", "tasks": [{
        "name": "train", "parameters": [{"key": "trainingDataSetId", "value": str(folder / "tiny.csv")}]}]}))
    done = _cli(server.home, "sweep", "train", str(instance), "-p", "steps=range(1,11)",
                "--metric", "loss", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    body = json.loads(done.stdout)
    trials = {int(r["params"]["steps"]): r["runId"] for r in body["rows"]}
    assert sorted(trials) == list(range(1, 11))
    return {"experimentId": body["experimentId"], "trials": trials}


@pytest.fixture(scope="module")
def retail(server, tmp_path_factory) -> dict:
    instance = tmp_path_factory.mktemp("retail") / "retail.json"
    instance.write_text(json.dumps({"name": "web retail", "engineId": "retail-sales", "tasks": [{
        "name": "train", "parameters": [{"key": "trainingDataSetId", "value": str(TRAINING_CSV)}]}]}))
    return train(server.home, instance, "epochs=2", "hidden_size=16", "n_estimators=2")


def test_a_retail_run_shows_its_system_metrics(server, retail, browser, tmp_path):
    system = retail["system"]
    assert system["sampled"] and system["samples"] >= 2 and system["peak_memory_mb"] > 50
    assert 0 <= system["mean_cpu_percent"] <= 100.0 * 1.1 and system["max_threads"] >= 1
    shown = _cli(server.home, "runs", "show", retail["runId"])
    assert shown.returncode == 0, shown.stderr
    assert "system:    peak memory" in shown.stdout and "mean CPU" in shown.stdout
    assert "samples every 1 s" in shown.stdout
    browser.navigate(f"{server.url}/runs/{retail['runId']}")
    browser.wait_for("window.__charts && window.__charts['system/memory_mb'] && window.__charts['system/cpu_percent']")
    memory = browser.evaluate("window.__charts['system/memory_mb'].data")
    assert len(memory[0]) == system["samples"] and max(memory[1]) == pytest.approx(system["peak_memory_mb"], rel=0.01)
    summary = browser.evaluate("document.querySelector('#system-summary').innerText")
    assert "peak memory (MB)" in summary and "mean CPU" in summary
    # the model's curves stay apart from the machine's
    assert browser.evaluate("!!document.querySelector('#charts [data-chart=\"MAPE\"]')")
    assert not browser.evaluate("!!document.querySelector('#charts [data-chart^=\"system/\"]')")
    browser.screenshot(tmp_path / "retail-system.png")


def test_a_sweep_trial_shows_system_metrics_and_sorts_by_them(server, sweep, browser):
    run_id = sweep["trials"][5]
    shown = _cli(server.home, "runs", "show", run_id)
    assert "system:    peak memory" in shown.stdout
    browser.navigate(f"{server.url}/runs/{run_id}")
    browser.wait_for("window.__charts && window.__charts['system/memory_mb']")
    page = httpx.get(server.url + "/ui/api/runs", params={
        "sort": "-system.peak_memory_mb", "experimentId": sweep["experimentId"]}).json()
    peaks = [r["system"]["peak_memory_mb"] for r in page["runs"]]
    assert len(peaks) == 10 and peaks == sorted(peaks, reverse=True) and "peak_memory_mb" in page["columns"]["system"]


def test_a_search_finds_the_same_runs_from_cli_json_and_page(server, sweep, browser, tmp_path):
    expected = {sweep["trials"][s] for s in (6, 7, 8, 10)}
    listed = _cli(server.home, "runs", "list", "--filter", SEARCH, "--json")
    assert listed.returncode == 0, listed.stderr
    assert {r["id"] for r in json.loads(listed.stdout)} == expected
    body = httpx.get(server.url + "/ui/api/runs", params={"filter": SEARCH}).json()
    assert {r["id"] for r in body["runs"]} == expected and body["total"] == 4
    # the page: typed into the box, kept in the address, the same rows
    browser.navigate(server.url + "/")
    browser.wait_for("document.querySelector('#search input') !== null")
    browser.evaluate(f"document.querySelector('#search input').value = {json.dumps(SEARCH)}; "
                     "document.querySelector('#search button').click()")
    browser.wait_for("location.search.includes('filter=') && window.__ready && "
                     "document.querySelectorAll('#runs tbody tr[data-run]').length === 4")
    ids = browser.evaluate("[...document.querySelectorAll('#runs tbody tr[data-run]')].map(r => r.dataset.run)")
    assert set(ids) == expected
    address = browser.evaluate("location.href")
    browser.navigate(address)   # a bookmark of the search opens the same table
    browser.wait_for("window.__ready && document.querySelectorAll('#runs tbody tr[data-run]').length === 4")
    assert browser.evaluate("document.querySelector('#search input').value") == SEARCH
    # the table exports what it shows
    browser.evaluate("document.querySelector('#csv').click()")
    browser.wait_for("typeof window.__csv === 'string'")
    lines = browser.evaluate("window.__csv").strip().splitlines()
    assert len(lines) == 5 and lines[0].startswith("run,state,mode") and "loss" in lines[0].split(",")
    assert {line.split(",")[0] for line in lines[1:]} == expected
    browser.screenshot(tmp_path / "search.png")


def test_a_malformed_search_is_a_400_that_points_at_the_token(server, browser):
    bad = httpx.get(server.url + "/ui/api/runs", params={"filter": "metrics.loss < and"})
    assert bad.status_code == 400
    body = bad.json()
    assert body["position"] == 16 and body["token"] == "and" and "a number" in body["expected"]
    assert {"type", "title", "status", "detail"} <= set(body)
    listed = _cli(server.home, "runs", "list", "--filter", "metrics.loss < and")
    assert listed.returncode != 0 and "position 16" in listed.stderr
    browser.navigate(server.url + "/?filter=" + quote("metrics.loss < and"))
    browser.wait_for("document.querySelector('#search-error') !== null")
    assert "position 16" in browser.evaluate("document.querySelector('#search-error').innerText")


def test_parallel_coordinates_draw_a_ten_trial_sweep(server, sweep, browser, tmp_path):
    browser.navigate(f"{server.url}/compare?experiment={sweep['experimentId']}")
    browser.wait_for("window.__parcoords && window.__charts && window.__charts.scatter")
    assert browser.evaluate("window.__parcoords.axes") == ["steps", "loss"]
    assert browser.evaluate("document.querySelector('#parcoords').width") > 0
    assert len(browser.evaluate("window.__parcoords.kept()")) == 10
    scatter = browser.evaluate("window.__charts.scatter.data")
    assert scatter[0] == list(range(1, 11)) and scatter[1] == pytest.approx([1 / s for s in range(1, 11)])
    browser.evaluate("window.__parcoords.brush('steps', 1, 3)")   # brushing an axis filters the table
    kept = browser.evaluate("[...document.querySelectorAll('#trials tbody tr:not([hidden])')].map(r => r.dataset.run)")
    assert set(kept) == {sweep["trials"][s] for s in (1, 2, 3)}
    assert browser.evaluate("document.querySelector('#trials-count').innerText") == "(3 of 10)"
    browser.screenshot(tmp_path / "parallel-coordinates.png")
