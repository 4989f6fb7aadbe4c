"""Fixtures for the runs page: a real `run serve` on a free loopback port, runs trained with the
real `run train`, and a real headless Chromium (skipped, saying why, when none is installed). The
helpers live in web_helpers.py."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from cdp_browser import Browser, chromium_or_skip
from web_helpers import Server, noop_instance, start_server, stop_server, train


@pytest.fixture(scope="module")
def web_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("web") / "home"


@pytest.fixture(scope="module")
def server(web_home: Path) -> Iterator[Server]:
    live = start_server(web_home)
    try:
        yield live
    finally:
        stop_server(live.process)


@pytest.fixture(scope="module")
def runs(server: Server) -> dict[str, dict]:
    """Two noop runs trained by `run train` while the server runs, with synthetic loss curves:
    3 steps (final loss 1/3) and 6 steps (final loss 1/6)."""
    instance = noop_instance(server.home.parent)
    return {"short": train(server.home, instance, "steps=3"),
            "long": train(server.home, instance, "steps=6")}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_or_skip()
    b = Browser(executable)
    try:
        yield b
    finally:
        b.close()
