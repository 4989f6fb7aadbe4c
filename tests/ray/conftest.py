"""The Ray suite's fixtures: one Ray head per session, on free loopback ports, stopped by its own
process ids. MLRUNTIME_TEST_RAY_ADDRESS reuses a head that is already up (a developer's)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "backends"))  # backend_conformance, failing_engines

from ray_head import RayHead  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "ray: needs a Ray head (started by the fixture); "
                                       "select with -m ray, skip with -m 'not ray'")


def pytest_collection_modifyitems(items):
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.ray)


@pytest.fixture(scope="session")
def ray_address():
    pytest.importorskip("ray")
    reuse = os.environ.get("MLRUNTIME_TEST_RAY_ADDRESS")
    if reuse:
        yield reuse
        return
    # Jobs run `python` from the head's PATH: make it this environment's.
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    head = RayHead(num_cpus=2).start()
    try:
        yield head.address
    finally:
        head.stop()
