"""`import runtime` and `run --help` never import ray; without ray the backend says how to get it.
(No Ray head needed, but kept with the Ray suite.)"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from runtime.errors import MissingDependency

RUN = str(Path(sys.executable).with_name("run"))


@pytest.mark.parametrize("code", [
    "import runtime, runtime.backends.ray, runtime.cli.submit, runtime.cli.main",
    "import runtime.cli.main as m; m.build_parser().parse_args(['submit', 'train', 'x'])",
    "import runtime.cli.main as m\ntry:\n    m.main(['submit', '--help'])\nexcept SystemExit:\n    pass",
    "import runtime.cli.main as m\ntry:\n    m.main(['--help'])\nexcept SystemExit:\n    pass",
])
def test_ray_is_not_imported(code):
    check = code + "\nimport sys\nassert 'ray' not in sys.modules, 'ray was imported'\n"
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_run_help_lists_submit_and_cancel():
    out = subprocess.run([RUN, "--help"], capture_output=True, text=True, check=True).stdout
    assert "submit" in out and "cancel" in out


def test_missing_ray_names_the_install_command(monkeypatch, tmp_path):
    from runtime.backends.ray import RayBackend
    from runtime.dispatch import HostInfo, plan as make_plan
    from runtime.resources import ResourceRequest
    from backend_conformance import make_spec

    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    plan = make_plan(engine_kind="python", resources=ResourceRequest(), host=HostInfo(cpu_count=1),
                     backend="ray")
    with pytest.raises(MissingDependency) as info:
        RayBackend(address="http://127.0.0.1:1").submit(
            spec=make_spec(tmp_path, "noop"), plan=plan, log_path=tmp_path / "run.log")
    assert info.value.detail == ("ray is not installed; install it with: "
                                 "pip install 'mlinstance-runtime[ray]'")
    assert info.value.status == 501


def test_submit_without_ray_prints_the_install_command(tmp_path):
    code = ("import sys; sys.modules['ray'] = None\n"
            "from runtime.cli.main import main\n"
            f"sys.exit(main(['submit', 'train', {str(tmp_path / 'x.json')!r}, '--address', "
            "'http://127.0.0.1:1', '--home', " + repr(str(tmp_path / 'home')) + "]))\n")
    (tmp_path / "x.json").write_text('{"name": "n", "engineId": "noop", "tasks": [{"name": "train", '
                                     '"parameters": [{"key": "trainingDataSetId", "value": "r.csv"}]}]}')
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1
    assert "pip install 'mlinstance-runtime[ray]'" in proc.stderr
