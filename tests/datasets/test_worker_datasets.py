"""Runs resolve data set ids through the sandbox's catalog: `run train` with a registered id."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from runtime.datasets import read_dataset, resolve_dataset, write_dataset


def cli(home: Path, *argv: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLRUNTIME_")}
    return subprocess.run([sys.executable, "-m", "runtime.cli.main", *argv, "--home", str(home)],
                          capture_output=True, text=True, env=env, timeout=timeout)


def test_a_registered_id_feeds_a_built_in_engine_and_receives_its_scores(tmp_path):
    home = tmp_path / "home"
    rows = pd.DataFrame({"store": [1, 2, 3, 4], "weeklySales": [1.0, 2.0, 3.0, 4.0]})
    write_dataset(rows, resolve_dataset(str(tmp_path / "input.txt.jsonl"), {}))
    (tmp_path / "input.txt.jsonl").rename(tmp_path / "input.data")   # a name that says nothing
    for argv in (("my-input", str(tmp_path / "input.data"), "--format", "jsonl"),
                 ("my-scores", str(tmp_path / "scores"))):
        proc = cli(home, "datasets", "add", *argv)
        assert proc.returncode == 0, proc.stderr
    instance = tmp_path / "noop.json"
    instance.write_text(json.dumps({"name": "catalog", "engineId": "noop", "tasks": [
        {"name": "train", "parameters": [{"key": "trainingDataSetId", "value": "my-input"}]},
        {"name": "score", "parameters": [{"key": "scoringDataSetId", "value": "my-input"},
                                         {"key": "scoringResultsDataSetId",
                                          "value": "my-scores"}]}]}))

    proc = cli(home, "train", str(instance), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    train = json.loads(proc.stdout.strip().splitlines()[-1])
    assert train["state"] == "DONE"
    assert {m["name"]: m["value"] for m in train["metrics"]}["rows"] == 4.0
    catalog_file = home / "runs" / train["runId"] / "datasets.json"
    snapshot = json.loads(catalog_file.read_text())["datasets"]
    assert snapshot["my-input"]["format"] == "jsonl" and "my-scores" in snapshot

    proc = cli(home, "score", str(instance), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    score = json.loads(proc.stdout.strip().splitlines()[-1])
    output = Path(score["output"])
    assert output.parent == tmp_path / "scores" and output.suffix == ".parquet"
    pd.testing.assert_frame_equal(read_dataset(resolve_dataset(str(output), {})), rows,
                                  check_dtype=False)


def test_an_unknown_id_fails_the_run_naming_it(tmp_path):
    home = tmp_path / "home"
    assert cli(home, "datasets", "add", "known", str(tmp_path / "k.csv")).returncode == 0
    instance = tmp_path / "noop.json"
    instance.write_text(json.dumps({"name": "unknown", "engineId": "noop", "tasks": [
        {"name": "train", "parameters": [{"key": "trainingDataSetId", "value": "5c8a9b0e"}]}]}))
    proc = cli(home, "train", str(instance), "--json")
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    assert "Unknown data set '5c8a9b0e'" in text and "registered: known" in text
