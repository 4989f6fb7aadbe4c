"""The runs page in a real headless Chromium against a real `run serve`, with runs trained by the
real `run train`. Each test saves a screenshot of its page into its temporary folder."""
from __future__ import annotations

import json

import httpx
import pytest

from web_helpers import noop_instance, start_server, stop_server, train


def _row_ids(browser) -> list[str]:
    return browser.evaluate("[...document.querySelectorAll('#runs tbody tr[data-run]')].map(r => r.dataset.run)")


def test_the_table_lists_a_run_just_trained(server, runs, browser, tmp_path):
    browser.navigate(server.url + "/")
    browser.wait_for("document.querySelectorAll('#runs tbody tr[data-run]').length >= 2")
    ids = _row_ids(browser)
    assert runs["long"]["runId"] in ids and runs["short"]["runId"] in ids
    assert ids[0] == runs["long"]["runId"]   # newest first by default
    text = browser.evaluate("document.querySelector('#runs').innerText")
    assert "DONE" in text and "noop" in text and "web noop" in text
    # the final metrics are columns; the parameter that differs between the runs too
    headers = browser.evaluate("[...document.querySelectorAll('#runs th')].map(t => t.innerText.trim())")
    assert "loss" in headers and "steps" in headers
    browser.wait_for("document.querySelector('select#sort') !== null")   # the menus come after
    browser.screenshot(tmp_path / "runs-table.png")


def test_sorting_by_a_metric_reorders_the_table(server, runs, browser, tmp_path):
    browser.navigate(server.url + "/?sort=metric.loss")   # a bookmarkable view: ascending loss
    browser.wait_for("document.querySelectorAll('#runs tbody tr[data-run]').length >= 2")
    assert _row_ids(browser)[:2] == [runs["long"]["runId"], runs["short"]["runId"]]
    browser.evaluate("document.querySelector('th[data-sort=\"metric.loss\"]').click()")
    browser.wait_for("location.search.includes('sort=-metric.loss') && window.__ready")
    browser.wait_for(f"document.querySelector('#runs tbody tr[data-run]').dataset.run === {json.dumps(runs['short']['runId'])}")
    assert _row_ids(browser)[:2] == [runs["short"]["runId"], runs["long"]["runId"]]
    assert browser.evaluate("document.querySelector('th.sorted').dataset.sort") == "metric.loss"
    browser.screenshot(tmp_path / "runs-sorted.png")


def test_the_run_page_charts_each_step(server, runs, browser, tmp_path):
    run_id = runs["long"]["runId"]
    browser.navigate(f"{server.url}/runs/{run_id}")
    browser.wait_for("window.__charts && window.__charts.loss")
    assert browser.evaluate("window.__charts.loss.data[0].length") == 6
    assert browser.evaluate("window.__charts.loss.data[1]") == pytest.approx([1 / s for s in range(1, 7)])
    assert browser.evaluate("document.querySelector('[data-chart=\"loss\"] canvas') !== null")
    text = browser.evaluate("document.body.innerText")
    assert "DONE" in text and "steps" in text and "mlInstance" in text   # parameter, source layer
    assert "download" in text and runs["long"]["modelId"] in text
    browser.wait_for("document.querySelector('#log').textContent.includes('stage train done')")
    browser.screenshot(tmp_path / "run-page.png")


def test_compare_overlays_the_curves_of_two_runs(server, runs, browser, tmp_path):
    a, b = runs["short"]["runId"], runs["long"]["runId"]
    browser.navigate(f"{server.url}/compare?runs={a},{b}")
    browser.wait_for("window.__charts && window.__charts.loss")
    data = browser.evaluate("window.__charts.loss.data")
    assert len(data) == 3                       # the steps, then one curve per run
    assert data[0] == [1, 2, 3, 4, 5, 6]
    assert data[1][:3] == pytest.approx([1, 1 / 2, 1 / 3]) and data[1][3:] == [None] * 3
    assert data[2] == pytest.approx([1 / s for s in range(1, 7)])
    differing = browser.evaluate("[...document.querySelectorAll('#params tr.diff td:first-child')].map(t => t.innerText)")
    assert differing == ["steps"]
    browser.screenshot(tmp_path / "compare.png")


def test_the_json_behind_the_page(server, runs):
    run = runs["long"]
    url = f"{server.url}/data/sensei/experiments/{run['experimentId']}/runs/{run['runId']}/metrics"
    body = httpx.get(url).json()
    assert body["series"]["loss"]["steps"] == [1, 2, 3, 4, 5, 6]
    page = httpx.get(server.url + "/ui/api/runs", params={"sort": "-best.loss", "limit": 1}).json()
    assert page["total"] >= 2 and len(page["runs"]) == 1 and page["runs"][0]["id"] == runs["short"]["runId"]
    bad = httpx.get(server.url + "/ui/api/runs", params={"sort": "colour"})
    assert bad.status_code == 400 and "colour" in bad.json()["detail"]
    other = httpx.get(server.url + "/ui/api/runs", headers={"x-sandbox-name": "elsewhere"}).json()
    assert other["total"] == 0   # runs stay in their sandbox


def test_with_tokens_the_page_asks_for_one(tmp_path, browser):
    live = start_server(tmp_path / "home", "--token", "s3cret=jane")
    try:
        assert httpx.get(live.url + "/ui/api/runs").status_code == 401
        browser.navigate(live.url + "/")   # the page's own origin first: about:blank has no storage
        browser.evaluate("localStorage.clear()")   # no token kept from an earlier server on this port
        browser.navigate(live.url + "/")
        browser.wait_for("!document.getElementById('auth').hidden")
        browser.evaluate("document.querySelector('#token-form input').value = 's3cret';"
                         "document.querySelector('#token-form button').click()")
        browser.wait_for("document.querySelector('#runs') !== null")
        assert "0 of 0" in browser.evaluate("document.querySelector('#range').innerText")
        browser.screenshot(tmp_path / "token.png")
    finally:
        try:
            browser.evaluate("localStorage.clear()")
        finally:
            stop_server(live.process)   # even when the page could not be cleared


def test_a_running_run_is_followed_live(server, browser, tmp_path):
    """A run still working shows RUNNING and its log as it grows; the page moves on to DONE and
    its curve when the run ends, without a reload."""
    import subprocess
    import sys

    from waiting import until
    from web_helpers import REPO, clean_env

    instance = noop_instance(tmp_path, "live noop")
    proc = subprocess.Popen(
        [sys.executable, "-m", "runtime.cli.main", "train", str(instance), "--home", str(server.home),
         "--sandbox", "live", "-p", "steps=5", "-p", "sleep_ms=5000", "--quiet"],
        cwd=REPO, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        running = until(lambda: httpx.get(server.url + "/ui/api/runs", params={"state": "RUNNING"},
                                          headers={"x-sandbox-name": "live"}).json()["runs"],
                        timeout_s=120, what="the CLI run listed as RUNNING")
        run_id = running[0]["id"]
        browser.navigate(f"{server.url}/runs/{run_id}?sandbox=live")
        assert browser.evaluate("document.getElementById('state').innerText") == "RUNNING"
        assert "(following)" in browser.evaluate("document.body.innerText")
        browser.wait_for("document.querySelector('#log').textContent.includes('stage feature_pipeline ...')", 60)
        browser.screenshot(tmp_path / "run-running.png")
        # the page is drawn again when the run ends: the log shown so far never blanks meanwhile
        browser.evaluate("window.__logBlanked = false; new MutationObserver(() => {"
                         " const log = document.querySelector('#log');"
                         " if (!log || !log.textContent) window.__logBlanked = true; })"
                         ".observe(document.body, {childList: true, subtree: true, characterData: true})")
        browser.wait_for("document.getElementById('state') && document.getElementById('state').innerText === 'DONE'", 120)
        browser.wait_for("window.__charts && window.__charts.loss && window.__charts.loss.data[0].length === 5", 30)
        browser.wait_for("document.querySelector('#log').textContent.includes('stage evaluate done')", 30)
        assert browser.evaluate("window.__logBlanked") is False
        browser.screenshot(tmp_path / "run-done.png")
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)
