"""The API's docs pages (Swagger UI, ReDoc) work offline: a real `run serve` and a real headless
Chromium that cannot resolve any host but 127.0.0.1, recording every request the pages make."""
from __future__ import annotations

from typing import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from cdp_browser import Browser, chromium_or_skip
from web_helpers import start_server, stop_server

# Every host name but the loopback address is "not found": a page that needs a CDN stays blank.
OFFLINE = ("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",)


@pytest.fixture(scope="module")
def offline_browser() -> Iterator[Browser]:
    executable = chromium_or_skip()
    b = Browser(executable, extra_args=OFFLINE)
    try:
        b.send("Network.enable")
        # The browser really is offline: the CDN FastAPI's default pages load from is unreachable.
        reached = b.evaluate("fetch('https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css',"
                             " {mode: 'no-cors'}).then(() => 'reached', () => 'unreachable')")
        assert reached == "unreachable"
        yield b
    finally:
        b.close()


def _requests_off_the_machine(browser: Browser) -> list[str]:
    """URLs the page asked for that went to another host; a request the page's Content Security
    Policy refused never left the browser."""
    refused = {e["params"]["requestId"] for e in browser.events
               if e.get("method") == "Network.loadingFailed"
               and e["params"].get("blockedReason") == "csp"}
    off = []
    for event in browser.events:
        if event.get("method") != "Network.requestWillBeSent":
            continue
        url = event["params"]["request"]["url"]
        if urlsplit(url).scheme in ("data", "blob") or event["params"]["requestId"] in refused:
            continue
        if urlsplit(url).hostname != "127.0.0.1":
            off.append(url)
    return off


def test_swagger_ui_renders_the_operations_offline(server, offline_browser, tmp_path):
    b = offline_browser
    b.navigate(server.url + "/data/sensei/docs", page_ready=False)
    b.wait_for("document.querySelectorAll('.opblock').length >= 20")
    paths = b.evaluate("[...document.querySelectorAll('.opblock-summary-path')].map(e => e.innerText)")
    assert "/data/sensei/engines" in paths and "/data/sensei/experiments/{experiment_id}/runs" in paths
    assert b.evaluate("document.querySelector('.information-container .title').innerText").startswith(
        "MLInstance Runtime")
    b.screenshot(tmp_path / "swagger.png")
    assert _requests_off_the_machine(b) == []
    loaded = {urlsplit(e["params"]["request"]["url"]).path for e in b.events
              if e.get("method") == "Network.requestWillBeSent"}
    assert "/data/sensei/docs/assets/swagger-ui-bundle.js" in loaded


def test_redoc_renders_the_operations_offline(server, offline_browser, tmp_path):
    b = offline_browser
    b.navigate(server.url + "/data/sensei/redoc", page_ready=False)
    b.wait_for("document.querySelectorAll('[data-section-id^=\"operation/\"]').length >= 20")
    assert "List Engines" in b.evaluate("document.body.innerText")
    b.screenshot(tmp_path / "redoc.png", whole_page=False)   # the page is 30,000 px tall
    assert _requests_off_the_machine(b) == []


def test_with_tokens_the_docs_and_their_assets_need_none(tmp_path):
    live = start_server(tmp_path / "home", "--token", "s3cret=jane")
    try:
        page = httpx.get(live.url + "/data/sensei/docs")
        assert page.status_code == 200 and "/data/sensei/docs/assets/swagger-ui-bundle.js" in page.text
        assert "cdn." not in page.text
        script = httpx.get(live.url + "/data/sensei/docs/assets/swagger-ui-bundle.js")
        assert script.status_code == 200 and "SwaggerUIBundle" in script.text
        assert httpx.get(live.url + "/data/sensei/docs/assets/redoc.standalone.js").status_code == 200
        assert httpx.get(live.url + "/data/sensei/engines").status_code == 401   # the data is not
    finally:
        stop_server(live.process)
