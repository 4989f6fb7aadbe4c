"""What the CLI prints for a new user: `--explain` within the screen's width, readable metric values,
`run serve`'s addresses, a help text for every option."""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from runtime.cli.main import build_parser
from runtime.numbers import readable
from runtime.textfit import fit_line, wrap_cell

REPO = Path(__file__).resolve().parents[2]
TRAINING_CSV = REPO.parent / "shared" / "data" / "retail" / "retail-training.csv"
WEB_ENGINES = REPO / "tests" / "web"   # web_engines.CurveEngine: a curve in the tens of thousands


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_") and k != "COLUMNS"}
    return {**env, **extra}


def _cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime.cli.main", *args, "--home", str(home)],
                          cwd=REPO, env=_env(**env), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def retail_instance(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("explain") / "retail.json"
    doc = json.loads((REPO / "configs" / "retail-sales.json").read_text())
    for task in doc["tasks"]:
        for p in task["parameters"]:
            if p["key"] == "trainingDataSetId":
                p["value"] = str(TRAINING_CSV)
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("columns", [None, "80"])
def test_explain_fits_100_columns_or_the_terminal(tmp_path, retail_instance, columns):
    extra = {"COLUMNS": columns} if columns else {}
    done = _cli(tmp_path / "home", "train", str(retail_instance), "--explain", **extra)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    width = int(columns or 100)
    assert max(len(line) for line in lines) <= width, [l for l in lines if len(l) > width]
    # a long value wraps inside its column and loses nothing
    start = next(i for i, line in enumerate(lines) if line.startswith("ACP_DSW_INPUT_FEATURES "))
    column = lines[start].index('"lastYearNextRatio')
    value = lines[start][column:].rsplit("  ", 1)[0].strip()
    for line in lines[start + 1:]:
        if line[:column].strip():
            break
        value += line.strip()
    assert json.loads(value).split(",")[-1] == "lastYearNextHoliday" and len(json.loads(value).split(",")) == 11
    assert lines[start].rstrip().endswith("default")   # the source stays on the value's first line
    env_line = next(i for i, line in enumerate(lines) if line.startswith("env "))
    assert lines[env_line + 1].startswith(" " * 9) and "THREADS" in lines[env_line + 1]


def test_wrapping_keeps_every_character():
    text = '"a,b,c/very-long-word-without-breaks-at-all,d e"'
    for width in (1, 3, 8, 20):
        pieces = wrap_cell(text, width)
        assert "".join(pieces) == text and all(len(p) <= width for p in pieces)
    assert fit_line("env      A=1 B=2 C=3 D=4", 18) == ["env      A=1 B=2", "         C=3 D=4"]


def test_numbers_are_readable():
    assert readable(28330.41) == "28,330.4"
    assert readable(5175.0) == "5,175"
    assert readable(0.047713) == "0.04771"
    assert readable(12.3456) == "12.35"
    assert readable(1.2e-7) == "1.2e-07" and readable(float("nan")) == "nan"


def test_a_run_prints_its_metrics_readably(tmp_path):
    instance = tmp_path / "curve.json"
    instance.write_text(json.dumps({"name": "curve", "engineId": "web_engines:CurveEngine", "tasks": [{
        "name": "train", "parameters": [{"key": "trainingDataSetId", "value": str(TRAINING_CSV)}]}]}))
    home = tmp_path / "home"
    done = _cli(home, "train", str(instance), "-p", "steps=2", "-p", "first=28330.41", "-p", "drop=0",
                "--cold", "--quiet", PYTHONPATH=str(WEB_ENGINES))
    assert done.returncode == 0, done.stderr
    assert "sales_error 28,330.4" in done.stdout and "rows 5,175" in done.stdout
    assert "e+0" not in done.stdout
    shown = _cli(home, "runs", "show", "latest")
    assert shown.returncode == 0 and "sales_error 28,330.4" in shown.stdout


def test_serve_prints_the_addresses_of_the_api_its_docs_and_the_runs_page(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "runtime.cli.main", "serve", "--port", str(port),
                             "--home", str(tmp_path / "home")], cwd=REPO, env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        banner = [proc.stdout.readline() for _ in range(3)]
        root = f"http://127.0.0.1:{port}"
        assert banner[0].startswith(f"Serving the Sensei ML API at {root}/data/sensei ")
        assert banner[1].split() == ["API", "docs:", f"{root}/data/sensei/docs", "(ReDoc:",
                                     f"{root}/data/sensei/redoc)"]
        assert banner[2].split() == ["Runs", "page:", f"{root}/"]
        urls = re.findall(r"http://\S+?(?=\)|\s|$)", "".join(banner))
        for _ in range(300):   # the banner comes just before uvicorn listens
            try:
                httpx.get(root + "/ui/static/app.css", timeout=1)
                break
            except httpx.TransportError:
                pass
        for url in urls:
            assert httpx.get(url, timeout=10, follow_redirects=True).status_code == 200, url
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=30) == 0


def _options(parser: argparse.ArgumentParser, path: tuple[str, ...]):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _options(sub, (*path, name))
        elif not isinstance(action, argparse._HelpAction):
            yield " ".join(path), action


def test_every_option_and_argument_has_a_help_text():
    missing = [f"{cmd} {'/'.join(a.option_strings) or a.dest}"
               for cmd, a in _options(build_parser(), ("run",)) if not a.help]
    assert missing == []


def test_help_says_an_engine():
    done = subprocess.run([sys.executable, "-m", "runtime.cli.main", "engines", "--help"], cwd=REPO,
                          env=_env(), capture_output=True, text=True, timeout=60)
    assert "register an Engine" in done.stdout and "register a Engine" not in done.stdout
    assert "register an MLInstance" in subprocess.run(
        [sys.executable, "-m", "runtime.cli.main", "instances", "--help"], cwd=REPO, env=_env(),
        capture_output=True, text=True, timeout=60).stdout
