"""The terminal while a run works: a live line on a TTY, plain log lines otherwise, the summary
once, nothing but the result with --quiet; and the built-in engine's per-epoch curves."""
from __future__ import annotations

import io
import json
import subprocess
import sys

import pytest

from web_helpers import REPO, clean_env, noop_instance
from runtime.cli.progress import RunConsole
from runtime.metrics_series import SeriesProgress, SeriesWriter, split_metric_args

WORKER_SUMMARY = ["run 1234 DONE: train with noop in 0.10 s", "  metric loss = 0.25",
                  "  model_dir: /x/model", "  rows: 5"]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_output_keeps_the_log_but_not_the_workers_summary():
    out = io.StringIO()
    console = RunConsole(out)
    assert not console.live
    console.write("2026-01-01 INFO runtime.worker: stage train ...\n2026-01-01 INFO runtime.progress: ep")
    console.write("ochs: 1/2, loss 0.5\n" + "\n".join(WORKER_SUMMARY) + "\n")
    console.close()
    text = out.getvalue()
    assert "stage train" in text and "epochs: 1/2, loss 0.5" in text   # CI and pipes see progress lines
    assert "metric loss" not in text and "DONE: train" not in text


def test_quiet_shows_nothing():
    out = Tty()
    console = RunConsole(out, quiet=True)
    console.follow(".")
    console.write("2026-01-01 INFO runtime.worker: stage train ...\n")
    console.close()
    assert out.getvalue() == ""


def test_a_terminal_gets_a_live_line_with_the_loss(tmp_path):
    writer = SeriesWriter(tmp_path)
    epochs, batches = SeriesProgress(10, "epochs", writer), SeriesProgress(100, "batches", writer)
    epochs.update(3)
    batches.update(30)
    writer.point("trainingLoss", 0.0123, 3)
    writer.stage("train")
    writer.flush()
    out = Tty()
    console = RunConsole(out, refresh_s=0.01)
    console.follow(tmp_path)
    line = console.status_text(200)
    assert "train" in line and "epochs 3/10" in line and "30%" in line and "batches 30/100" in line
    assert "trainingLoss 0.0123" in line
    console.write("2026-01-01 INFO runtime.worker: stage train done\n"
                  "2026-01-01 INFO runtime.progress: epochs: 3/10\n")
    console.close()
    text = out.getvalue()
    assert "\r" in text and "epochs 3/10" in text and "stage train done\n" in text
    assert "runtime.progress" not in text        # the live line replaces the progress log lines
    assert text.endswith("\r\x1b[K")             # the line is gone before the summary


def _cli(tmp_path, *args):
    instance = noop_instance(tmp_path)
    return subprocess.run([sys.executable, "-m", "runtime.cli.main", "train", str(instance),
                           "--home", str(tmp_path / "home"), "-p", "steps=4", *args],
                          cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=300)


def test_run_train_prints_its_summary_once(tmp_path):
    done = _cli(tmp_path)
    assert done.returncode == 0, done.stderr
    both = done.stdout + done.stderr
    assert "stage train" in done.stderr and "noop steps: 4/4, loss 0.25" in done.stderr
    assert both.count("0.25") == 2   # the progress line in the log, and the summary's metrics
    assert done.stdout.count("metrics:") == 1 and "metric loss" not in both


def test_quiet_prints_only_the_result(tmp_path):
    done = _cli(tmp_path, "--quiet", "--json")
    assert done.returncode == 0 and done.stderr == ""
    summary = json.loads(done.stdout)
    assert summary["state"] == "DONE" and {"name": "loss", "value": 0.25, "valueType": "double"} in summary["metrics"]


def test_retail_sales_reports_loss_and_validation_metrics_per_epoch():
    pytest.importorskip("torch")
    from engines.retail_sales import RetailSalesEngine
    from runtime.engine import default_context, read_table

    points: list[tuple] = []
    engine = RetailSalesEngine()
    params = {"epochs": 3, "n_estimators": 2, "hidden_size": 16,
              "trainingDataSetId": str(REPO.parent / "shared" / "data" / "retail" / "retail-training.csv")}

    def log_metric(name, value, step=None, valueType=None):
        step, _ = split_metric_args(step, valueType)   # the worker's reading of the call
        points.append((name, step, value))

    ctx = default_context(engine, "train", params, log_metric=log_metric)
    data = read_table(params["trainingDataSetId"])
    model = engine.train(ctx, engine.feature_pipeline(ctx, data))
    steps = {name: [s for n, s, _ in points if n == name and s is not None] for name in ("trainingLoss", "MAPE", "RMSE")}
    assert steps == {"trainingLoss": [1, 2, 3], "MAPE": [1, 2, 3], "RMSE": [1, 2, 3]}
    final = {m.name: m.value for m in engine.evaluate(ctx, model, data)}
    last_mape = [v for n, s, v in points if n == "MAPE" and s == 3][0]
    assert last_mape == pytest.approx(final["MAPE"], rel=1e-4)   # the curve ends where evaluate does
