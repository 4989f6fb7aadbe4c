"""Engines and backends are found through entry points read once a process, and read again when a
package is installed while the process lives (a server that stays up)."""
import subprocess
import sys
import time
from importlib import metadata

import pytest

from runtime import entry_points
from runtime.backends import installed_backends
from runtime.engine import installed_engines, load_engine
from runtime.procs import wait_child


@pytest.mark.parametrize("group", ["mlinstance_runtime.engines", "mlinstance_runtime.backends",
                                   "console_scripts"])
def test_a_group_is_what_importlib_metadata_gives(group):
    assert entry_points.group(group) == {ep.name: ep for ep in metadata.entry_points(group=group)}


def test_the_builtins_are_found_through_it():
    assert {"noop", "retail-sales"} <= set(installed_engines())
    assert {"python-cpu", "pyspark", "ray"} <= set(installed_backends())


def _install(site, name, engine):
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        f"[mlinstance_runtime.engines]\n{engine} = engines.noop:NoopEngine\n")


def test_a_package_installed_after_the_first_read_is_seen(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    before = set(installed_engines())
    assert "late-engine" not in before
    _install(site, "late_pkg", "late-engine")
    assert set(installed_engines()) == before | {"late-engine"}
    assert load_engine("late-engine").name == "noop"
    _install(site, "later_pkg", "later-engine")
    assert {"late-engine", "later-engine"} <= set(installed_engines())


def test_wait_child_returns_the_exit_status_once_the_child_ends():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3); raise SystemExit(3)"])
    with pytest.raises(subprocess.TimeoutExpired):
        wait_child(proc, 0.01)
    assert proc.returncode is None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            assert wait_child(proc, 0.1) == 3
            break
        except subprocess.TimeoutExpired:
            continue
    assert proc.returncode == 3
    assert wait_child(proc, 0.1) == 3          # reaped: answers again without waiting
    assert wait_child(proc) == 3


def test_wait_child_of_a_non_popen_waits_as_it_does():
    class Child:
        returncode = None

        def wait(self, timeout=None):
            self.returncode = 0 if timeout == 0.5 else 9
            return self.returncode

    assert wait_child(Child(), 0.5) == 0
