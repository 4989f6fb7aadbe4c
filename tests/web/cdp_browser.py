"""A headless Chromium driven over the Chrome DevTools Protocol (a websocket), for the page tests.

Uses the system's `chromium` (Debian's package; `.ci/run` installs it) and the `websockets`
package already in the environment: nothing is downloaded at test time.
"""
from __future__ import annotations

import base64
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

import httpx
from websockets.sync.client import connect

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_chromium() -> Optional[str]:
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        return explicit
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def chromium_or_skip() -> str:
    """The Chromium to drive; the test is skipped, saying how to get one, when there is none."""
    import pytest

    executable = find_chromium()
    if executable is None:
        pytest.skip("no Chromium on this machine: install Debian's chromium (apt-get install -y "
                    "chromium; .ci/run does) or set CHROMIUM=/path/to/chrome")
    return executable


class Browser:
    """One Chromium process with one page; `close` stops exactly that process group."""

    def __init__(self, executable: str, *, width: int = 1400, height: int = 1000,
                 start_timeout_s: float = 30.0, extra_args: tuple[str, ...] = ()) -> None:
        self.profile = tempfile.mkdtemp(prefix="mlrt-chromium-")
        self.process = subprocess.Popen(
            [executable, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             f"--user-data-dir={self.profile}", f"--window-size={width},{height}", *extra_args,
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            start_new_session=True)
        port = self._devtools_port(start_timeout_s)
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t.get("type") == "page")
        self._connection = connect(page["webSocketDebuggerUrl"], max_size=64 << 20, open_timeout=20)
        self.ws = self._connection.__enter__()
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        self.send("Page.enable")
        self.send("Runtime.enable")

    def _devtools_port(self, timeout_s: float) -> int:
        deadline = time.monotonic() + timeout_s
        seen = b""
        assert self.process.stderr is not None
        os.set_blocking(self.process.stderr.fileno(), False)
        while time.monotonic() < deadline:
            chunk = self.process.stderr.read() or b""
            seen += chunk
            match = re.search(rb"DevTools listening on ws://127\.0\.0\.1:(\d+)/", seen)
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        self.close()
        raise RuntimeError(f"Chromium did not start its DevTools endpoint: {seen.decode(errors='replace')[-2000:]}")

    def send(self, method: str, timeout_s: float = 60.0, **params: Any) -> dict[str, Any]:
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"CDP {method} got no answer in {timeout_s} s")
            message = json.loads(self.ws.recv(timeout=remaining))
            if message.get("id") == msg_id:
                if "error" in message:
                    raise RuntimeError(f"CDP {method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def navigate(self, url: str, timeout_s: float = 30.0, *, page_ready: bool = True) -> None:
        """Loads `url` and waits until the runs page says it is ready (`window.__ready`), or,
        with page_ready=False (another page), until the document has loaded."""
        self.events.clear()
        self.evaluate("window.__ready = false")   # the old page must not pass for the new one
        self.send("Page.navigate", url=url)
        self.wait_for("document.readyState === 'complete'"
                      + (" && window.__ready === true" if page_ready else ""), timeout_s)

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JS error in {expression!r}: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout_s: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout_s
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = self.evaluate(f"(() => {{ try {{ return {expression}; }} catch (e) {{ return null; }} }})()")
            except RuntimeError:
                last = None
            if last:
                return last
            time.sleep(0.05)
        raise TimeoutError(f"{expression!r} was not true within {timeout_s} s (last: {last!r}); "
                           f"page text: {self.evaluate('document.body && document.body.innerText')!r:.1500}")

    def screenshot(self, path: Path, *, whole_page: bool = True) -> Path:
        data = self.send("Page.captureScreenshot", format="png",
                         captureBeyondViewport=whole_page)["data"]
        path = Path(path)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self._connection.__exit__(None, None, None)
        except Exception:
            pass
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.process.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)
