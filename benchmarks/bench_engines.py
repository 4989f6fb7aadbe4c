"""Engine benchmark: the retail-sales engine's train, score and feature stages, and the runtime's
own cost of a run, each beside a hand-written baseline measured in the same run on the same data.

    python benchmarks/bench_engines.py [--quick] [--threads 2] [--only features,train,score,run]

1. training samples/s: `RetailSalesEngine.train` (fixed epochs, on pre-built features, its
   default per-epoch validation curve on a sample of the validation rows) vs a bare torch loop
   over pre-made tensors (same rows, model shape, AdamW, batch size, epochs; no validation);
   the stage with the curve on every validation row and without a curve shown beside;
2. scoring rows/s: the model's batched forward pass and the whole score stage vs the best
   hand-written forward pass (torch inference_mode or numpy) of the same weights;
3. feature pipeline rows/s: `feature_pipeline` vs the same features by groupby/shift in pandas;
4. `run train` of the noop engine vs a bare script importing the same libraries, and `run --help`.

Sides run interleaved (A B A B ...), each timing is one call, and the median is reported: the
machine is shared, so absolute numbers only compare within one run. See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from _common import table  # noqa: E402
from _engines_baselines import (NumpyForward, TorchForward, bare_train, hand_features,  # noqa: E402
                                standardise)

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"

TARGET_RATIO = 0.9          # engine throughput / baseline throughput: features, forward
TARGET_STAGE_RATIO = 0.95   # the train and score stages (issue 31: bounded memory, speed kept)
TARGET_HELP_S = 0.2         # `run --help`, median wall time
TARGET_RUN_OVERHEAD_S = 0.3  # `run train` (noop) minus the bare script, medians
HEAVY_MODULES = ("torch", "pyspark", "ray")

# Sizes: rows are 143 weeks per store (the sample's length). Chosen so that one call of the
# slower side takes >= 0.5 s on a 2-core machine; --quick is a smoke test, not a measurement.
FULL = {"feature_stores": 4000, "train_stores": 1000, "epochs": 3, "score_stores": 3000,
        "repeats": 7, "budget_s": 30, "run_repeats": 9, "help_repeats": 15}
QUICK = {"feature_stores": 400, "train_stores": 150, "epochs": 1, "score_stores": 300,
         "repeats": 2, "budget_s": 5, "run_repeats": 3, "help_repeats": 5}
WEEKS = 143


# --------------------------------------------------------------------------------------------
# Timing


def interleaved(sides: dict[str, Callable[[], Any]], repeats: int, budget_s: float,
                min_rounds: int = 3) -> dict[str, list[float]]:
    """Seconds per call of each side, sides alternating so that load drifts hit both alike;
    under `NAME:cpu` the CPU seconds of this process for each call (all its threads).

    Stops after `repeats` rounds, or earlier once `budget_s` is spent and `min_rounds` are done:
    when other jobs take the cores, a torch call can stall for many times its usual length.
    """
    times: dict[str, list[float]] = {name: [] for name in sides}
    times.update({f"{name}:cpu": [] for name in sides})
    started = time.perf_counter()
    for done in range(1, repeats + 1):
        for name, call in sides.items():
            c0, t0 = time.process_time(), time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t0)
            times[f"{name}:cpu"].append(time.process_time() - c0)
        if done >= min(min_rounds, repeats) and time.perf_counter() - started > budget_s:
            break
    return times


def _stats(seconds: list[float], work: float, cpu: list[float] | None = None) -> dict[str, Any]:
    median = statistics.median(seconds)
    out = {"median_s": median, "min_s": min(seconds), "max_s": max(seconds),
           "runs": len(seconds), "per_s": work / median}
    if cpu:
        out["cpu_median_s"] = statistics.median(cpu)
    return out


def _side(times: dict[str, list[float]], name: str, work: float) -> dict[str, Any]:
    return _stats(times[name], work, times.get(f"{name}:cpu"))


def _comparison(name: str, unit: str, work: float, rows: int, engine: dict, baseline: dict,
                baseline_name: str, extra: dict | None = None,
                target: float = TARGET_RATIO) -> dict[str, Any]:
    ratio = engine["per_s"] / baseline["per_s"]
    # Judged on medians; the ratio of the fastest calls is shown beside it as a noise check, and
    # the ratio of CPU seconds (what the work took, whatever else ran meanwhile; with one torch
    # thread it hardly depends on the load, with two it counts the threads' spinning too).
    ratio_best = baseline["min_s"] / engine["min_s"]
    ratio_cpu = (baseline["cpu_median_s"] / engine["cpu_median_s"]
                 if engine.get("cpu_median_s") and baseline.get("cpu_median_s") else float("nan"))
    return {"name": name, "unit": unit, "work": work, "rows": rows, "engine": engine,
            "baseline": baseline, "baseline_name": baseline_name, "ratio": ratio,
            "ratio_of_fastest": ratio_best, "ratio_cpu": ratio_cpu,
            "target": f">= {target}x baseline",
            "verdict": "PASS" if ratio >= target else "FAIL", **(extra or {})}


# --------------------------------------------------------------------------------------------
# 3. Features


def bench_features(sizes: dict, seed: int, threads: int) -> list[dict[str, Any]]:
    from engines.retail_sales import RetailSalesEngine, generate_retail
    from runtime.engine import default_context

    raw = generate_retail(seed, stores=sizes["feature_stores"], weeks=WEEKS)
    engine = RetailSalesEngine()
    ctx = default_context(engine, "featurePipeline", {}, threads=threads)
    ours, theirs = engine.feature_pipeline(ctx, raw), hand_features(raw)   # warm-up and check
    checked = _check_same_features(ours, theirs, seed)
    times = interleaved({"engine": lambda: engine.feature_pipeline(ctx, raw),
                         "baseline": lambda: hand_features(raw)}, sizes["repeats"], sizes["budget_s"],
                         sizes["min_rounds"])
    n = len(raw)
    return [_comparison("feature pipeline", "rows/s", n, n, _side(times, "engine", n),
                        _side(times, "baseline", n), "pandas groupby/shift by hand",
                        {"checked": checked})]


def _check_same_features(ours: pd.DataFrame, theirs: pd.DataFrame, seed: int) -> str:
    """Every column of both frames on a random sample of rows: the comparison is only fair if the
    baseline computes what the engine computes."""
    if set(ours.columns) != set(theirs.columns) or len(ours) != len(theirs):
        raise AssertionError(f"feature frames differ in shape: {sorted(set(ours.columns) ^ set(theirs.columns))}, "
                             f"{len(ours)} vs {len(theirs)} rows")
    sample = np.random.default_rng(seed).choice(len(ours), size=min(len(ours), 20_000), replace=False)
    for column in ours.columns:
        a, b = ours[column].to_numpy()[sample], theirs[column].to_numpy()[sample]
        if a.dtype.kind == "f" or b.dtype.kind == "f":
            np.testing.assert_allclose(a.astype("float64"), b.astype("float64"), rtol=1e-9, atol=1e-12,
                                       equal_nan=True, err_msg=f"feature {column!r}")
        elif not (a == b).all():
            raise AssertionError(f"feature {column!r} differs")
    return f"{len(ours.columns)} columns equal (allclose rtol 1e-9) on {len(sample):,} sampled rows"


# --------------------------------------------------------------------------------------------
# 1. Training


def _training_arrays(features: pd.DataFrame, params: Any, inputs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The rows and standardised inputs the engine trains on, selected by hand: a label, positive
    sales, the training dates, every input present."""
    target, label = params.target, params.target + "Ahead"
    rows = (features[label].notna() & (features[target] > 0)
            & (features["date"] >= pd.Timestamp(params.train_start))
            & (features["date"] <= pd.Timestamp(params.train_end)))
    x = features.loc[rows, inputs].to_numpy(dtype="float64")
    complete = ~np.isnan(x).any(axis=1)
    x = x[complete]
    kept = features.loc[rows][complete]
    std = x.std(axis=0)
    std[~(std > 1e-12)] = 1.0
    y = np.log(kept[label].to_numpy(dtype="float64") / kept[target].to_numpy(dtype="float64"))
    return (x - x.mean(axis=0)) / std, y


def _validation_rows(features: pd.DataFrame, params: Any) -> int:
    """The rows evaluate judges (a label, positive sales, dated from validation_start)."""
    label = params.label_column or params.target + "Ahead"
    rows = features[label].notna() & (features[params.target] > 0)
    if params.validation_start is not None:
        rows &= features["date"] >= pd.Timestamp(params.validation_start)
    return int(rows.sum())


def bench_training(sizes: dict, seed: int, threads: int) -> tuple[list[dict[str, Any]], Any]:
    from engines.retail_sales import RetailSalesEngine, generate_retail
    from engines.retail_sales.model import fit
    from runtime.engine import default_context

    import torch

    engine = RetailSalesEngine()
    raw = generate_retail(seed, stores=sizes["train_stores"], weeks=WEEKS)
    features = engine.feature_pipeline(default_context(engine, "featurePipeline", {}, threads=threads), raw)
    ctx = default_context(engine, "train", {"epochs": sizes["epochs"], "seed": seed}, threads=threads)
    p = ctx.params
    model = engine.train(ctx, features)                       # warm-up; also the model scored below
    x, y = _training_arrays(features, p, model.meta["inputs"])
    if len(x) != model.meta["training_rows"]:
        raise AssertionError(f"baseline selected {len(x)} training rows, the engine {model.meta['training_rows']}")
    shape = dict(hidden_size=p.hidden_size, depth=p.max_depth, members=p.n_estimators, epochs=p.epochs,
                 batch_size=p.batch_size, learning_rate=p.learning_rate, weight_decay=p.weight_decay,
                 seed=p.seed)
    cpu = torch.device("cpu")
    bare_train(x, y, **shape)
    # The run's default draws a validation curve after every epoch on a fixed sample of the
    # validation rows (validation_sample_rows), a curve the bare loop does not draw; the stage
    # with the curve on every validation row, and without a curve, are shown beside, not judged.
    def variant(**extra: Any) -> Any:
        return default_context(engine, "train", {"epochs": sizes["epochs"], "seed": seed, **extra},
                               threads=threads)

    every_row, quiet = variant(validation_sample_rows=0), variant(validation_every_epochs=0)
    times = interleaved({
        "engine": lambda: engine.train(ctx, features),
        "engine_every_row": lambda: engine.train(every_row, features),
        "engine_quiet": lambda: engine.train(quiet, features),
        "engine_fit": lambda: fit(x, y, device=cpu, **shape),
        "baseline": lambda: bare_train(x, y, **shape),
    }, sizes["repeats"], sizes["budget_s"],
                         sizes["min_rounds"])
    samples = len(x) * p.epochs
    described = (f"{p.n_estimators} members x {len(model.meta['inputs'])}-{p.hidden_size}x{p.max_depth}-1, "
                 f"batch {p.batch_size}, {p.epochs} epochs, AdamW, {threads} torch threads")
    validation_rows = _validation_rows(features, p)
    curve = min(validation_rows, p.validation_sample_rows or validation_rows)
    sides = (f"both sides: the same {len(x):,} training rows, {p.epochs} epochs; the engine also "
             f"selects and standardises them from the feature frame, keeps the stores' history, "
             f"runs a one-cycle learning-rate schedule and draws the validation curve after each "
             f"epoch on {curve:,} of the {validation_rows:,} validation rows (its default "
             f"validation_sample_rows={p.validation_sample_rows}); the bare loop gets the "
             f"standardised matrix and does nothing else")
    base = _side(times, "baseline", samples)
    rows = [
        _comparison("train stage (engine.train)", "samples/s", samples, len(x),
                    _side(times, "engine", samples), base, "bare torch loop",
                    {"model": described, "checked": sides}, target=TARGET_STAGE_RATIO),
        _comparison(f"  curve on all {validation_rows:,} validation rows", "samples/s", samples,
                    len(x), _side(times, "engine_every_row", samples), base, "bare torch loop",
                    {"model": described, "judged": False}, target=TARGET_STAGE_RATIO),
        _comparison("  without per-epoch validation", "samples/s", samples, len(x),
                    _side(times, "engine_quiet", samples), base, "bare torch loop",
                    {"model": described, "judged": False}, target=TARGET_STAGE_RATIO),
        _comparison("  of which fit() alone", "samples/s", samples, len(x),
                    _side(times, "engine_fit", samples), base, "bare torch loop",
                    {"model": described, "judged": False}),
    ]
    return rows, model


def scoring_model(sizes: dict, seed: int, threads: int) -> Any:
    """The model bench_training trains (same data and parameters), for `--only score`."""
    from engines.retail_sales import RetailSalesEngine, generate_retail
    from runtime.engine import default_context

    engine = RetailSalesEngine()
    raw = generate_retail(seed, stores=sizes["train_stores"], weeks=WEEKS)
    features = engine.feature_pipeline(default_context(engine, "featurePipeline", {}, threads=threads), raw)
    ctx = default_context(engine, "train", {"epochs": sizes["epochs"], "seed": seed}, threads=threads)
    return engine.train(ctx, features)


# --------------------------------------------------------------------------------------------
# 2. Scoring


def bench_scoring(sizes: dict, seed: int, threads: int, model: Any) -> list[dict[str, Any]]:
    from engines.retail_sales import RetailSalesEngine, generate_retail
    from engines.retail_sales.features import build_features
    from runtime.engine import default_context

    import torch

    engine = RetailSalesEngine()
    raw = generate_retail(seed + 1, stores=sizes["score_stores"], weeks=WEEKS)
    ctx = default_context(engine, "score", {}, threads=threads)
    batch = engine._batch_size(ctx, model)   # the run's inference batch (unset: from width and cache)
    cpu = torch.device("cpu")
    features = build_features(raw, model.meta["target"])
    inputs = model.meta["inputs"]
    mean, std = np.asarray(model.meta["mean"]), np.asarray(model.meta["std"])
    state = {k: v.detach().cpu() for k, v in model.net.state_dict().items()}
    members = model.meta["hyperparameters"]["n_estimators"]
    forwards = {"torch": TorchForward(state, members),
                "torch, buffers reused": TorchForward(state, members, reuse=True),
                "numpy": NumpyForward(state, members)}

    # The best hand-written forward pass: each implementation and batch size on the first 100k
    # rows, twice, the fastest kept (a batch much past 16k spills the caches on this machine;
    # from 1024 rows up, as the hidden activations of 1-2k rows are what fits a core's L2).
    z = standardise(features, inputs, mean, std)
    reference = model.predict_log_ratio(features, cpu, batch)
    trial_z = z[:100_000]
    trials = {}
    for impl, forward in forwards.items():
        np.testing.assert_allclose(forward(z, batch), reference, atol=1e-5, err_msg=f"{impl} forward")
        for size in ((1024, 2048, 4096, 8192, 16384) if impl.startswith("torch") else (2048, 8192)):
            seconds = []
            for _ in range(2):
                t0 = time.perf_counter()
                forward(trial_z, size)
                seconds.append(time.perf_counter() - t0)
            trials[(impl, size)] = min(seconds)
    impl, size = min(trials, key=trials.get)
    best = forwards[impl]

    def hand_forward() -> np.ndarray:
        return best(standardise(features, inputs, mean, std), size)

    def hand_stage() -> pd.DataFrame:
        frame = hand_features(raw, model.meta["target"])
        log_ratio = best(standardise(frame, inputs, mean, std), size)
        current = frame[model.meta["target"]].to_numpy(dtype="float64")
        with np.errstate(invalid="ignore"):
            prediction = np.where(current > 0, current * np.exp(log_ratio), np.nan)
        return pd.DataFrame({"date": frame["date"], "store": frame["store"], "prediction": prediction})

    ours, theirs = engine.score(ctx, model, raw), hand_stage()
    np.testing.assert_allclose(ours["prediction"].to_numpy(), theirs["prediction"].to_numpy(),
                               rtol=1e-5, equal_nan=True, err_msg="score stage predictions")
    times = interleaved({
        "engine_forward": lambda: model.predict_log_ratio(features, cpu, batch),
        "baseline_forward": hand_forward,
        "engine_stage": lambda: engine.score(ctx, model, raw),
        "baseline_stage": hand_stage,
    }, sizes["repeats"], sizes["budget_s"],
                         sizes["min_rounds"])
    n = len(raw)
    chosen = f"hand {impl} forward, batch {size}" + (" (inference_mode)" if impl.startswith("torch") else "")
    return [
        _comparison("model forward (predict_log_ratio)", "rows/s", n, n,
                    _side(times, "engine_forward", n), _side(times, "baseline_forward", n),
                    f"{chosen}", {"engine_batch": batch,
                                  "trials_s": {f"{i}/{s}": t for (i, s), t in trials.items()}}),
        _comparison("score stage (engine.score, raw rows)", "rows/s", n, n,
                    _side(times, "engine_stage", n), _side(times, "baseline_stage", n),
                    f"hand features + {chosen}", {"checked": "predictions allclose rtol 1e-5"},
                    target=TARGET_STAGE_RATIO),
    ]


# --------------------------------------------------------------------------------------------
# 4. The runtime's own cost: `run train` of the noop engine, `run --help`


def _wall(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)
    return time.perf_counter() - t0, done


def _worker_modules(env: dict[str, str], data: Path) -> list[str]:
    """Third-party modules a noop train worker has loaded once its work is done, in load order."""
    probe = (
        "import json, sys\n"
        "import runtime.worker\n"
        "from runtime.engine import load_engine, read_table\n"
        "load_engine('noop')\n"
        f"read_table({str(data)!r})\n"
        "own = ('runtime', 'engines', '__main__')\n"
        "print(json.dumps([m for m in list(sys.modules) if m.split('.')[0] not in sys.stdlib_module_names\n"
        "                  and m.split('.')[0] not in own and not m.startswith('_')]))\n")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return json.loads(out.stdout)


def bench_run_overhead(sizes: dict) -> list[dict[str, Any]]:
    run_cmd = shutil.which("run", path=str(Path(sys.executable).parent)) or shutil.which("run")
    if run_cmd is None:
        raise RuntimeError("the `run` console script is not installed (pip install -e .)")
    work = Path(tempfile.mkdtemp(prefix="bench-engines-"))
    try:
        # Bytecode cached on both sides, as an installed package has it (pip compiles a wheel's
        # modules): with PYTHONDONTWRITEBYTECODE set, as on some dev and CI machines, an editable
        # checkout's own modules would be compiled from source by every `run` and every worker
        # (0.1-0.2 s), while the bare script imports only compiled third-party modules.
        env = {k: v for k, v in os.environ.items()
               if k not in ("MLRUNTIME_HOME", "PYTHONDONTWRITEBYTECODE")}
        home = work / "home"
        data = work / "rows.csv"
        pd.DataFrame({"x": np.arange(100, dtype="float64"), "y": np.arange(100) % 2}).to_csv(data, index=False)
        instance = work / "noop.json"
        instance.write_text(json.dumps({
            "name": "bench-noop", "engineId": "noop",
            "tasks": [{"name": "train", "parameters": [{"key": "trainingDataSetId", "value": str(data)}]}]}))
        modules = _worker_modules(env, data)
        for required in ("pandas", "pyarrow", "pydantic"):
            if required not in modules:
                modules.append(required)
        modules_file = work / "modules.json"
        modules_file.write_text(json.dumps(modules))
        bare = [sys.executable, str(BENCH_DIR / "_engines_bare_noop.py"), str(modules_file), str(data),
                str(work / "bare-out")]
        train = [run_cmd, "train", str(instance), "--home", str(home), "--json"]

        # One run first: it registers the Engine and the MLInstance (later runs reuse them) and says
        # whether a noop train runs at all on this version of the runtime.
        _, first = _wall(train, env, work)
        ok = first.returncode == 0
        reason = "" if ok else _reason(first)
        _wall(bare, env, work)
        runs: dict[str, list[float]] = {"run_train": [], "bare": []}
        states: list[str] = []
        for _ in range(sizes["run_repeats"]):
            seconds, done = _wall(train, env, work)
            runs["run_train"].append(seconds)
            states.append("DONE" if done.returncode == 0 else "FAILED")
            seconds, done = _wall(bare, env, work)
            if done.returncode != 0:
                raise RuntimeError(f"bare script failed: {done.stderr[-2000:]}")
            runs["bare"].append(seconds)
        run_med, bare_med = statistics.median(runs["run_train"]), statistics.median(runs["bare"])
        overhead = run_med - bare_med
        stage_times = _stage_durations(first)

        help_times = []
        for _ in range(sizes["help_repeats"]):
            seconds, done = _wall([run_cmd, "--help"], env, work)
            if done.returncode != 0:
                raise RuntimeError(f"run --help failed: {done.stderr[-2000:]}")
            help_times.append(seconds)
        python_start = [_wall([sys.executable, "-c", "pass"], env, work)[0] for _ in range(sizes["help_repeats"])]
        heavy = _heavy_imports_at_help(env)
        help_med = statistics.median(help_times)
        all_done = ok and all(s == "DONE" for s in states)
        run_verdict = "PASS" if all_done and overhead <= TARGET_RUN_OVERHEAD_S else "FAIL"
        return [
            {"name": "run train (noop) overhead", "unit": "s",
             "engine": {"median_s": run_med, "min_s": min(runs["run_train"]), "max_s": max(runs["run_train"]),
                        "runs": len(runs["run_train"])},
             "baseline": {"median_s": bare_med, "min_s": min(runs["bare"]), "max_s": max(runs["bare"]),
                          "runs": len(runs["bare"])},
             "baseline_name": f"bare script importing {len(modules)} worker modules",
             "overhead_s": overhead, "target": f"overhead <= {TARGET_RUN_OVERHEAD_S} s and the run DONE",
             "run_states": states, "first_run_ok": ok, "first_run_reason": reason,
             "worker_stage_durations_s": stage_times, "modules": modules, "verdict": run_verdict},
            {"name": "run --help", "unit": "s",
             "engine": {"median_s": help_med, "min_s": min(help_times), "max_s": max(help_times),
                        "runs": len(help_times)},
             "baseline": {"median_s": statistics.median(python_start), "runs": len(python_start)},
             "baseline_name": "python -c pass", "heavy_imports": heavy,
             "target": f"<= {TARGET_HELP_S} s, no {'/'.join(HEAVY_MODULES)} imported",
             "verdict": "PASS" if help_med <= TARGET_HELP_S and not heavy else "FAIL"},
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _reason(done: subprocess.CompletedProcess) -> str:
    try:
        summary = json.loads(done.stdout.strip().splitlines()[-1])
        return f"{summary.get('state')}: {summary.get('reason')}"
    except (ValueError, IndexError):
        return (done.stderr.strip().splitlines() or ["(no output)"])[-1][:300]


def _stage_durations(done: subprocess.CompletedProcess) -> dict[str, float]:
    try:
        return json.loads(done.stdout.strip().splitlines()[-1]).get("durations_s") or {}
    except (ValueError, IndexError, AttributeError):
        return {}


def _heavy_imports_at_help(env: dict[str, str]) -> list[str]:
    probe = ("import sys\nsys.argv = ['run', '--help']\nfrom runtime.cli.main import main\n"
             "import contextlib, io\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n"
             "    try:\n        main()\n    except SystemExit:\n        pass\n"
             f"print(','.join(m for m in {HEAVY_MODULES!r} if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return [m for m in out.stdout.strip().split(",") if m]


# --------------------------------------------------------------------------------------------
# Output


def _print_throughput(rows: list[dict[str, Any]]) -> None:
    body = []
    for r in rows:
        judged = r.get("judged", True)
        body.append([r["name"], f"{r['rows']:,}", r["unit"], r["engine"]["per_s"], r["baseline"]["per_s"],
                     f"{r['ratio']:.2f}x", f"{r['ratio_of_fastest']:.2f}x",
                     f"{r.get('ratio_cpu', float('nan')):.2f}x", r["engine"]["median_s"],
                     r["baseline"]["median_s"], r["engine"]["runs"],
                     r["verdict"] if judged else f"({r['verdict']})", r["baseline_name"]])
    print(table(["stage", "rows", "unit", "engine", "baseline", "ratio", "(fastest)", "(cpu s)", "engine s",
                 "base s", "runs", "verdict", "baseline"], body))


def _print_runs(rows: list[dict[str, Any]]) -> None:
    body = []
    for r in rows:
        if "overhead_s" in r:
            measured = f"+{r['overhead_s']:.3f} s"
        else:
            measured = f"{r['engine']['median_s']:.3f} s"
        body.append([r["name"], r["engine"]["median_s"], r["baseline"]["median_s"], measured,
                     r["target"], r["verdict"], r["baseline_name"]])
    print(table(["measure", "median s", "baseline s", "measured", "target", "verdict", "baseline"], body))
    for r in rows:
        if r.get("first_run_reason"):
            print(f"  note: the noop run did not succeed: {r['first_run_reason']}")
        if r.get("worker_stage_durations_s"):
            shown = ", ".join(f"{k} {v:.3f}" for k, v in r["worker_stage_durations_s"].items())
            print(f"  worker stages (first run, s): {shown}")
        if r.get("heavy_imports"):
            print(f"  note: `run --help` imported {', '.join(r['heavy_imports'])}")


def _environment(threads: int) -> dict[str, Any]:
    import pyarrow
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=ROOT).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, cwd=ROOT).stdout.strip())
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "processor": platform.processor(), "torch": torch.__version__, "numpy": np.__version__,
            "pandas": pd.__version__, "pyarrow": pyarrow.__version__, "torch_threads": threads,
            "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
            "git_commit": commit, "git_dirty": dirty, "load_avg_at_start": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, few repeats: a smoke test")
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1),
                        help="torch threads for engine and baseline alike (default 2)")
    parser.add_argument("--only", default="features,train,score,run",
                        help="comma-separated subset of features,train,score,run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-rounds", type=int, default=3,
                        help="rounds of each comparison even past its time budget (a loaded "
                             "machine: more rounds, steadier medians)")
    args = parser.parse_args(argv)
    parts = {p.strip() for p in args.only.split(",") if p.strip()}
    unknown = parts - {"features", "train", "score", "run"}
    if unknown:
        parser.error(f"unknown part(s): {', '.join(sorted(unknown))}")
    sizes = {**(QUICK if args.quick else FULL), "min_rounds": args.min_rounds}

    import torch

    torch.set_num_threads(args.threads)   # the engine sets the same from its context's threads
    env = _environment(args.threads)
    started = time.perf_counter()
    print(f"bench_engines: {'quick' if args.quick else 'full'}, torch threads {args.threads}, "
          f"load average {env['load_avg_at_start'][0]:.2f}, commit {env['git_commit']}"
          f"{' (dirty)' if env['git_dirty'] else ''}\n")
    throughput: list[dict[str, Any]] = []
    runs: list[dict[str, Any]] = []
    part_s: dict[str, float] = {}
    load: dict[str, tuple[float, float, float]] = {}

    def timed(name: str, call: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        result = call()
        part_s[name] = round(time.perf_counter() - t0, 1)
        load[name] = os.getloadavg()
        print(f"  ... {name}: {part_s[name]:.0f} s, load average {load[name][0]:.2f}",
              file=sys.stderr, flush=True)
        return result

    if "features" in parts:
        throughput += timed("features", lambda: bench_features(sizes, args.seed, args.threads))
    model = None
    if "train" in parts:
        rows, model = timed("train", lambda: bench_training(sizes, args.seed, args.threads))
        throughput += rows
    elif "score" in parts:   # the model scored: trained once, not timed
        model = scoring_model(sizes, args.seed, args.threads)
    if "score" in parts:
        throughput += timed("score", lambda: bench_scoring(sizes, args.seed, args.threads, model))
    if throughput:
        _print_throughput(throughput)
        for r in throughput:
            if r.get("checked"):
                print(f"  {r['name']}: {r['checked']}")
            if r.get("model"):
                print(f"  {r['name']}: {r['model']}")
                break
        print()
    if "run" in parts:
        runs = timed("run", lambda: bench_run_overhead(sizes))
        _print_runs(runs)
        print()

    judged = [r for r in throughput + runs if r.get("judged", True)]
    failed = [r["name"] for r in judged if r["verdict"] != "PASS"]
    elapsed = time.perf_counter() - started
    print("load average (1, 5, 15 min) at start "
          + ", ".join(f"{v:.2f}" for v in env["load_avg_at_start"])
          + "".join(f"; after {k} " + ", ".join(f"{v:.2f}" for v in avg) for k, avg in load.items()))
    print(f"{len(judged) - len(failed)}/{len(judged)} targets PASS"
          + (f"; FAIL: {', '.join(failed)}" if failed else "") + f"  ({elapsed:.0f} s)")

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"engines-{stamp}.json"
    path.write_text(json.dumps({"benchmark": "engines", "timestamp": stamp, "args": vars(args),
                                "sizes": sizes, "weeks": WEEKS, "environment": env,
                                "throughput": throughput, "runs": runs, "failed": failed,
                                "part_s": part_s, "load_avg_after": load, "elapsed_s": elapsed}, indent=2, default=_json_default))
    print(f"results: {path.relative_to(ROOT)}")
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
