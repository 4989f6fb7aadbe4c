"""The README's curl examples and the CLI agree on the org and sandbox: the listing example, run
as written against a real `run serve`, shows the MLInstance that `run train` registered."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from live_server import live_server
from readme_commands import commands

REPO = Path(__file__).resolve().parents[2]


def _api_block_curls() -> list[str]:
    blocks: dict[int, list[str]] = {}
    for cmd in commands():
        blocks.setdefault(cmd.block, []).append(cmd.text)
    return next(texts for texts in blocks.values()
                if any(t.startswith("curl ") and "/mlInstances?" in t for t in texts))


@pytest.fixture
def home_and_server(tmp_path):
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")}
    with live_server(home) as live:
        yield home, live, env


def test_the_readme_listing_shows_what_the_cli_registered(home_and_server, tmp_path):
    home, live, env = home_and_server
    engine_file = tmp_path / "engine.yaml"
    engine_file.write_text("name: Retail\ntype: Python\nartifacts:\n  default:\n    image:\n"
                           "      location: retail-sales\n")
    cli = [sys.executable, "-m", "runtime.cli.main"]
    engine = json.loads(subprocess.run([*cli, "engines", "create", str(engine_file), "--json",
                                        "--home", str(home)], env=env, cwd=REPO, check=True,
                                       capture_output=True, text=True).stdout)
    instance_file = tmp_path / "instance.json"
    instance_file.write_text(json.dumps({"name": "From the CLI", "engineId": engine["id"]}))
    instance = json.loads(subprocess.run([*cli, "instances", "create", str(instance_file), "--json",
                                          "--home", str(home)], env=env, cwd=REPO, check=True,
                                         capture_output=True, text=True).stdout)
    curls = _api_block_curls()
    listing = next(t for t in curls if "/mlInstances?" in t)
    listing = re.sub(r"http://127\.0\.0\.1:8765", live.base_url, listing).replace("ENGINE_ID", engine["id"])
    out = subprocess.run(["bash", "-c", listing], env=env, capture_output=True, text=True, check=True)
    found = [m["id"] for m in json.loads(out.stdout)["children"]]
    assert found == [instance["id"]], listing
    # every example names the CLI's default org and sandbox, or none
    for text in curls:
        assert re.findall(r"x-gw-ims-org-id: ([^'\"]+)", text) in ([], ["local"]), text
        assert re.findall(r"x-sandbox-name: ([^'\"]+)", text) in ([], ["prod"]), text
