"""The runs page as a new user reads it, in a real headless Chromium against a real `run serve`,
with runs made by the real `run train` in an org other than the default `local` (as a script's
org header would put them): chart axes that fit their labels, whole steps, the sorted metric
column in view, runs that did not finish ranked after those that did, and the page opening on
the org and sandbox that hold the runs. Each test saves a screenshot into its temporary folder."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from waiting import until
from web_helpers import REPO, TRAINING_CSV, clean_env, noop_instance, train

ORG = "MyOrg@AdobeOrg"
HEADERS = {"x-gw-ims-org-id": ORG, "x-sandbox-name": "prod"}
WORKER_PATH = {"PYTHONPATH": str(Path(__file__).parent)}   # web_engines for `run train`'s worker


def _run_cli(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime.cli.main", *args, "--home", str(home)],
                          cwd=REPO, env={**clean_env(), **WORKER_PATH}, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def curve_runs(server) -> dict[str, dict]:
    """In org MyOrg@AdobeOrg: two DONE runs whose curves are in the tens of thousands (final
    40,000 and 50,000), with wide parameter values; an ABORTED run whose partial curve (5, 4) is
    lower than both; and one noop run in sandbox `dev`."""
    folder = server.home.parent
    instance = folder / "curve.json"
    instance.write_text(json.dumps({"name": "curves", "engineId": "web_engines:CurveEngine", "tasks": [{
        "name": "train", "parameters": [{"key": "trainingDataSetId", "value": str(TRAINING_CSV)}]}]}))
    scope = ("--org", ORG, "--sandbox", "prod", "--cold")
    runs = {"low": train(server.home, instance, "steps=3", "first=42000", "echo=" + "a" * 300,
                         options=scope, env=WORKER_PATH),
            "high": train(server.home, instance, "steps=3", "first=52000", "echo=" + "b" * 300,
                          options=scope, env=WORKER_PATH)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli.main", "train", str(instance), "--home", str(server.home),
         *scope, "-p", "steps=2", "-p", "first=5", "-p", "drop=1", "-p", "hold_s=600", "--quiet"],
        cwd=REPO, env={**clean_env(), **WORKER_PATH}, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    try:
        running = until(lambda: httpx.get(server.url + "/ui/api/runs", params={"state": "RUNNING"},
                                          headers=HEADERS).json()["runs"],
                        timeout_s=120, what="the held run RUNNING")
        run = running[0]
        series_url = (f"{server.url}/data/sensei/experiments/{run['experimentId']}/runs/"
                      f"{run['id']}/metrics")
        until(lambda: len(httpx.get(series_url, headers=HEADERS).json()["series"]
                          .get("sales_error", {}).get("steps", [])) == 2,
              timeout_s=120, what="the held run's two points")
        cancelled = _run_cli(server.home, "cancel", run["id"], "--org", ORG, "--sandbox", "prod")
        assert cancelled.returncode == 0, cancelled.stderr
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
    runs["aborted"] = {"runId": run["id"], "experimentId": run["experimentId"]}
    assert httpx.get(series_url, headers=HEADERS).json()["state"] == "ABORTED"
    runs["dev"] = train(server.home, noop_instance(folder), options=("--org", ORG, "--sandbox", "dev"))
    return runs


def _ids(page: dict) -> list[str]:
    return [r["id"] for r in page["runs"]]


def test_a_metric_sort_ranks_runs_that_did_not_finish_after_the_done_ones(server, curve_runs):
    low, high, aborted = (curve_runs[k]["runId"] for k in ("low", "high", "aborted"))

    def page(**params) -> list[str]:
        return _ids(httpx.get(server.url + "/ui/api/runs", params=params, headers=HEADERS).json())

    assert page(sort="metric.sales_error") == [low, high, aborted]   # 40,000 < 50,000; 4 is last
    assert page(sort="-metric.sales_error") == [high, low, aborted]
    assert page(sort="best.sales_error") == [low, high, aborted]
    # pages cut across the parts: DONE runs, then the others
    assert page(sort="metric.sales_error", start=1, limit=1) == [high]
    assert page(sort="metric.sales_error", start=2, limit=1) == [aborted]
    assert page(sort="metric.sales_error", start=1, limit=2) == [high, aborted]
    assert page(sort="metric.sales_error", start=3, limit=5) == []


def test_the_page_opens_on_the_org_that_holds_the_runs(server, curve_runs, browser, tmp_path):
    scopes = httpx.get(server.url + "/ui/api/scopes").json()
    assert scopes["current"] == {"org": "local", "sandbox": "prod"}
    assert [(s["org"], s["sandbox"], s["runs"]) for s in scopes["scopes"]] == [
        (ORG, "prod", 3), (ORG, "dev", 1)]
    browser.navigate(server.url + "/")
    browser.wait_for("document.querySelectorAll('#runs tbody tr[data-run]').length === 3")
    assert "org=MyOrg%40AdobeOrg" in browser.evaluate("location.search")
    assert "local" in browser.evaluate("document.getElementById('scope-note').innerText")
    options = browser.evaluate("[...document.querySelectorAll('#scope-pick option')].map(o => o.innerText)")
    assert options == [f"{ORG} / prod (3 runs)", f"{ORG} / dev (1 run)"]
    browser.screenshot(tmp_path / "opened-on-org.png")
    browser.evaluate("const p = document.getElementById('scope-pick'); p.selectedIndex = 1;"
                     "p.dispatchEvent(new Event('change'))")
    browser.wait_for("location.search.includes('sandbox=dev') && window.__ready")
    browser.wait_for(f"document.querySelector('#runs tbody tr[data-run]').dataset.run === "
                     f"{json.dumps(curve_runs['dev']['runId'])}")
    assert browser.evaluate("document.querySelectorAll('#runs tbody tr[data-run]').length") == 1
    # an address that names its scope is kept, even an empty one
    browser.navigate(server.url + "/?org=local")
    assert "No runs match" in browser.evaluate("document.querySelector('#runs').innerText")
    assert browser.evaluate("document.getElementById('scope-note')") is None


def test_the_sorted_column_is_in_view_beside_wide_parameters(server, curve_runs, browser, tmp_path):
    in_view = ("(() => { const th = document.querySelector('th.sorted').getBoundingClientRect(),"
               " w = document.getElementById('runs-wrap').getBoundingClientRect();"
               " return th.left >= w.left && th.right <= w.right + 1; })()")
    browser.navigate(f"{server.url}/?org={ORG}&sandbox=prod&sort=metric.sales_error")
    assert browser.evaluate(in_view)
    rows = browser.evaluate("[...document.querySelectorAll('#runs tbody tr[data-run]')].map(r => "
                            "[r.dataset.run, r.querySelector('.state').innerText])")
    assert rows[-1] == [curve_runs["aborted"]["runId"], "ABORTED"]
    echo = browser.evaluate("[...document.querySelectorAll('#runs td.param')].find(td => "
                            "td.title.startsWith('aaa')).getBoundingClientRect().width")
    assert echo < 300   # a 300-character value is cut (its cell's title has it whole)
    browser.screenshot(tmp_path / "sorted-metric.png")
    # on a narrow screen, a parameter column sorted at the right end is scrolled into view
    browser.send("Emulation.setDeviceMetricsOverride", width=700, height=900, deviceScaleFactor=1,
                 mobile=False)
    try:
        last = browser.evaluate("[...document.querySelectorAll('#runs th.param')].pop().dataset.sort")
        browser.navigate(f"{server.url}/?org={ORG}&sandbox=prod&sort={last}")
        assert browser.evaluate("document.getElementById('runs-wrap').scrollLeft") > 0
        assert browser.evaluate(in_view)
        browser.screenshot(tmp_path / "sorted-param-narrow.png", whole_page=False)
    finally:
        browser.send("Emulation.clearDeviceMetricsOverride")


def test_chart_axes_fit_their_labels_and_steps_are_whole(server, curve_runs, browser, tmp_path):
    browser.navigate(f"{server.url}/runs/{curve_runs['low']['runId']}?org={ORG}&sandbox=prod")
    browser.wait_for("window.__charts && window.__charts.sales_error")
    y = browser.evaluate("""(() => { const u = window.__charts.sales_error, a = u.axes[1];
        u.ctx.font = a.font[0];
        const widest = Math.max(...a._values.map(v => u.ctx.measureText(v).width)) / devicePixelRatio;
        return {labels: a._values, size: a._size, needed: widest + a.ticks.size + a.gap}; })()""")
    assert "42,000" in y["labels"] or "41,000" in y["labels"]
    assert y["size"] >= y["needed"], y   # no label is cut at the left edge
    x = browser.evaluate("(() => { const a = window.__charts.sales_error.axes[0];"
                         " return {splits: a._splits, labels: a._values}; })()")
    assert x["splits"] and all(float(s).is_integer() for s in x["splits"]), x
    assert set(x["labels"]) <= {"1", "2", "3"}, x
    text = browser.evaluate("document.body.innerText")
    assert "40,000" in text   # the final metric, with a thousands separator
    browser.screenshot(tmp_path / "run-axes.png")


def test_a_scoped_token_is_offered_only_its_own_sandboxes(tmp_path):
    """On a team server the scope menu names no org or sandbox a user's token cannot open."""
    from web_helpers import start_server, stop_server

    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps({"tok-a": {"user": "a", "org": "OrgA", "sandboxes": ["s1"]},
                                  "tok-ops": "ops"}))
    live = start_server(tmp_path / "home", "--tokens-file", str(tokens))
    try:
        ops = {"Authorization": "Bearer tok-ops"}
        for org, sandbox in (("OrgA", "s1"), ("OrgA", "s2"), ("OrgB", "s1")):
            made = httpx.post(live.url + "/data/sensei/engines", json={"name": "e", "type": "Python"},
                              headers={**ops, "x-gw-ims-org-id": org, "x-sandbox-name": sandbox})
            assert made.status_code in (200, 201), made.text

        def offered(token: str) -> list[tuple[str, str]]:
            body = httpx.get(live.url + "/ui/api/scopes",
                             headers={"Authorization": f"Bearer {token}"}).json()
            return sorted((s["org"], s["sandbox"]) for s in body["scopes"])

        assert offered("tok-a") == [("OrgA", "s1")]
        assert offered("tok-ops") == [("OrgA", "s1"), ("OrgA", "s2"), ("OrgB", "s1")]
        assert httpx.get(live.url + "/ui/api/scopes").status_code == 401
    finally:
        stop_server(live.process)
