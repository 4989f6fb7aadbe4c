"""A PySpark recipe's own requirement reaches a Spark cluster's executors as Spark expects it: the
recipe (fixtures/packed_regression) needs tabulate, which the runtime's Python lacks, and imports
it in the module its UDFs live in. On local-cluster[1,1,1024] (an executor JVM with its own working
folder) the executors run a packed environment shipped with spark.archives as
./environment/bin/python, holding only what the cluster's Python lacks; the second run of the
recipe reuses the archive instead of packing it again."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd

from spark_recipe_helpers import FIXTURES, REPO, RETAIL, run_env

RUN_TIMEOUT_S = 900
MASTER = "local-cluster[1,1,1024]"
RECIPE = FIXTURES / "packed_regression"
SHAPE = [{"key": "driverMemory", "value": "1024"}, {"key": "driverCores", "value": "1"}]


def cli(jars: Path, home: Path, *args: str) -> dict:
    env = run_env(jars)
    if os.environ.get("MLRUNTIME_UV_CACHE_DIR"):   # the suite's uv cache (tests/conftest.py)
        env["MLRUNTIME_UV_CACHE_DIR"] = os.environ["MLRUNTIME_UV_CACHE_DIR"]
    proc = subprocess.run([sys.executable, "-m", "runtime.cli.main", *args, "--home", str(home),
                           "--json"], capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(proc.stdout)


def executor_pythons(application_id: str) -> list[str]:
    """argv[0] of the Python daemons that executors of `application_id` started (their working
    folder is the executor's, named after the application)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if b"pyspark.daemon" in argv and application_id in cwd:
            found.append(argv[0].decode())
    return found


def test_a_recipe_requirement_reaches_the_executors_as_a_packed_environment(jars_dir, tmp_path):
    home = tmp_path / "home"
    scores = tmp_path / "scores.parquet"
    config = tmp_path / "config.json"
    config.write_text(json.dumps([
        {"name": "train", "parameters": [
            {"key": "trainingDataSetId", "value": str(RETAIL / "DSWRetailSales-Training.parquet")},
            {"key": "evaluation.metrics", "value": "MAPE,MAE"},
            {"key": "evaluation.labelColumn", "value": "nextWeekSales"},
            {"key": "evaluation.scalingColumn", "value": "weeklysales"}, *SHAPE]},
        {"name": "score", "parameters": [
            {"key": "scoringDataSetId", "value": str(RETAIL / "DSWRetailSales-Scoring.parquet")},
            {"key": "scoringResultsDataSetId", "value": str(scores)}, *SHAPE]}]))

    trained = cli(jars_dir, home, "train", str(config), "--engine", str(RECIPE),
                  "--spark-master", MASTER)
    assert trained["state"] == "DONE", trained
    assert trained["spark"]["master"] == MASTER
    log = (home / "runs" / trained["runId"] / "worker.log").read_text(errors="replace")
    assert "packed environment env-" in log and "built in" in log, log[-3000:]
    assert "tabulate==0.9.0" in log and "run as ./environment/bin/python" in log
    # The executor's Python daemon (the warm worker keeps it alive) runs the packed interpreter
    assert set(executor_pythons(trained["spark"]["applicationId"])) == {"./environment/bin/python"}

    archives = list((home / "cache" / "spark-envs").glob("env-*.tar.gz"))
    assert len(archives) == 1
    with tarfile.open(archives[0]) as tar:
        names = tar.getnames()
        pth = next(n for n in names if n.endswith("/mlruntime-cluster.pth"))
        behind = tar.extractfile(pth).read().decode()
    tops = {Path(name).parts[3] for name in names
            if name.startswith("lib/python") and len(Path(name).parts) > 3}
    # Only what the cluster's Python lacks; never pyspark, py4j or pandas (the cluster's own, which
    # the .pth puts behind the packed packages, after our compat: sdk, platform_sdk)
    assert "tabulate" in tops
    assert not tops & {"pyspark", "py4j", "pandas", "numpy", "pyarrow", "runtime", "sdk"}
    assert str(REPO / "runtime" / "compat") in behind and "site-packages" in behind
    packed_at = archives[0].stat().st_mtime_ns

    scored = cli(jars_dir, home, "score", str(config), "--engine", str(RECIPE),
                 "--spark-master", MASTER)
    assert scored["state"] == "DONE", scored
    log = (home / "runs" / scored["runId"] / "worker.log").read_text(errors="replace")
    assert f"packed environment {archives[0].name} (cached" in log, log[-3000:]
    assert archives[0].stat().st_mtime_ns == packed_at
    assert list((home / "cache" / "spark-envs").glob("env-*.tar.gz")) == archives
    rows = pd.DataFrame(list(pd.read_parquet(scores)["_mlruntimetest"]))   # the saver's XDM shape
    assert len(rows) > 1000 and rows["prediction"].notna().all()


def test_requirements_the_cluster_has_ship_nothing(tmp_path):
    """Pins this interpreter (the cluster's Python) has at the same version, pyspark and py4j at
    any version, and the recipe's own package ship nothing; a URL or another version does."""
    from importlib.metadata import version

    from runtime.spark.archives import executor_environment, missing_pins, ships_to_executors

    env = tmp_path / "envs" / "abc"
    (env / "bin").mkdir(parents=True)
    (env / "mlruntime-env.json").write_text(json.dumps({"recipe_name": "Packed_Regression"}))
    (env / "requirements.lock").write_text(
        f"# resolved\npandas=={version('pandas')}\n    # via packed-regression\n"
        "pyspark==3.0.0\npy4j==0.1\npacked-regression @ file:///somewhere/recipe\n")
    assert executor_environment(env / "bin" / "python").archive is None
    assert not (tmp_path / "cache").exists()
    assert missing_pins(["pandas==0.1", "tabulate==0.9.0", "x @ https://host/x.whl"]) == [
        "pandas==0.1", "tabulate==0.9.0", "x @ https://host/x.whl"]
    assert [ships_to_executors(m) for m in ("local", "local[2]", "local-cluster[1,1,1024]",
                                            "spark://h:7077")] == [False, False, True, True]
