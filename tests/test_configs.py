"""The shipped MLInstance files resolve for every task they define (nothing runs)."""
import json
from pathlib import Path

import pytest

from runtime.cli.main import main

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.json"))
COMMANDS = {"train": "train", "score": "score", "featurePipeline": "fp"}


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_config_tasks_resolve(config, tmp_path, capsys):
    doc = json.loads(config.read_text())
    assert doc["name"] and doc["engineId"]
    for task in doc["tasks"]:
        command = COMMANDS[task["name"]]
        assert main([command, str(config), "--explain", "--home", str(tmp_path / "home")]) == 0
        out = capsys.readouterr().out
        assert "backend" in out and "source" in out
        if command == "score":   # no Model yet: the plan says so instead of failing
            assert "model    none yet" in out
