"""GPU workstation benchmark (issue 11): one script for a CUDA machine, a few minutes.

  1. training samples/s of the retail-sales engine's `fit` vs a hand-written CUDA loop doing the
     same math over pre-made device tensors (target: engine >= 0.95x the hand loop);
  2. the engine's speed options: fp32 (TF32 off), fp32 + TF32, bf16 autocast, torch.compile on/off
     (steady-state samples/s, the first epoch's time with any compile in it, the final loss: how
     much each option changes the result);
  3. scoring rows/s: the engine's `predict_log_ratio` from a DataFrame, and its fused predictor
     on a pre-made device tensor, vs a hand-written `inference_mode` loop over the same tensor;
  4. a 4-run `run sweep` across the host's devices with lease checks: whole-GPU runs never overlap
     on one device; `gpus=0.5` runs share one, never more than a whole device's worth at once.

Without CUDA it runs a small CPU version of 1-3 (the sweep only with --sweep), to check the
script itself; its figures mean nothing for a GPU. Results: printed, and written as JSON to
benchmarks/results/bench_gpu.json (or --out).

    python benchmarks/bench_gpu.py            # on a CUDA machine
    python benchmarks/bench_gpu.py --quick    # a smoke run (CPU fallback here)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_data(n: int, k: int, seed: int = 0) -> tuple[Any, Any]:
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, k)).astype("float64")
    coef = rng.normal(size=k) * 0.1
    y = np.tanh(x @ coef) * 0.3 + 0.02 * rng.normal(size=n)
    return x, y


# --- 1 and 2: training ------------------------------------------------------------------------

def engine_fit(x, y, cfg: dict[str, Any], device, *, precision="fp32", compile=False,
               tf32=True) -> dict[str, Any]:
    """The engine's own training function, timed per epoch (steady state: epochs 2..E)."""
    from engines.retail_sales.model import configure_matmul, fit

    configure_matmul(device, tf32)
    stamps: list[float] = []
    losses: list[float] = []
    batches = [0]

    def on_epoch(epoch: int, loss: float, net: Any) -> None:   # the engine reads it per epoch
        _sync(device)
        stamps.append(time.perf_counter())
        losses.append(loss)

    _sync(device)
    start = time.perf_counter()
    fit(x, y, hidden_size=cfg["hidden"], depth=cfg["depth"], members=cfg["members"],
        epochs=cfg["epochs"], batch_size=cfg["batch"], learning_rate=1e-3, weight_decay=1e-4,
        seed=0, device=device, on_epoch=on_epoch,
        on_batch=lambda rows: batches.__setitem__(0, batches[0] + 1),   # the progress counter
        precision=precision, compile=compile)
    steady = (len(stamps) - 1) * len(x) / (stamps[-1] - stamps[0])
    return {"samples_per_s": steady, "first_epoch_s": stamps[0] - start,
            "final_loss": losses[-1]}


def hand_loop(x, y, cfg: dict[str, Any], device, *, tf32=True) -> dict[str, Any]:
    """The same model and math written by hand over tensors made on the device beforehand."""
    import torch

    from engines.retail_sales.model import BaggedMLP, configure_matmul

    configure_matmul(device, tf32)
    torch.manual_seed(0)
    n = len(x)
    xt = torch.as_tensor(x, dtype=torch.float32, device=device)
    yt = torch.as_tensor(y, dtype=torch.float32, device=device)
    wt = torch.poisson(torch.ones(cfg["members"], n, device=device))
    orders = [torch.randperm(n, device=device) for _ in range(cfg["epochs"])]
    net = BaggedMLP(x.shape[1], cfg["hidden"], cfg["depth"], cfg["members"]).to(device)
    steps = -(-n // cfg["batch"])
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-3, total_steps=cfg["epochs"] * steps)
    bs = cfg["batch"]
    stamps = []
    _sync(device)
    net.train()
    for epoch in range(cfg["epochs"]):
        order = orders[epoch]
        for s in range(0, n, bs):
            idx = order[s:s + bs]
            w = wt[:, idx]
            loss = (w * (net(xt[idx]) - yt[idx]).abs()).sum() / w.sum().clamp(min=1.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        _sync(device)
        stamps.append(time.perf_counter())
    return {"samples_per_s": (len(stamps) - 1) * n / (stamps[-1] - stamps[0])}


def alternate(fns: dict[str, Callable[[], dict[str, Any]]], rounds: int) -> dict[str, dict]:
    """Each function `rounds` times, interleaved; the median samples/s of each."""
    runs: dict[str, list[dict]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            runs[name].append(fn())
    out = {}
    for name, results in runs.items():
        best = statistics.median(r["samples_per_s"] for r in results)
        out[name] = {**results[-1], "samples_per_s": best,
                     "all_samples_per_s": [round(r["samples_per_s"]) for r in results]}
    return out


# --- 3: scoring -------------------------------------------------------------------------------

def scoring(cfg: dict[str, Any], device, rounds: int) -> dict[str, Any]:
    import numpy as np
    import pandas as pd
    import torch

    from engines.retail_sales.engine import CUDA_BATCH_SIZE
    from engines.retail_sales.model import DEFAULT_BATCH_SIZE, BaggedMLP, RetailSalesModel

    n, k = cfg["score_rows"], cfg["inputs"]
    batch = CUDA_BATCH_SIZE if device.type == "cuda" else DEFAULT_BATCH_SIZE
    net = BaggedMLP(k, cfg["hidden"], cfg["depth"], cfg["members"]).to(device).eval()
    cols = [f"f{i}" for i in range(k)]
    frame = pd.DataFrame(np.random.default_rng(1).normal(size=(n, k)), columns=cols)
    model = RetailSalesModel(net=net, meta={"inputs": cols, "mean": [0.0] * k, "std": [1.0] * k},
                             history=pd.DataFrame())
    xt = torch.as_tensor(frame.to_numpy(dtype="float32").copy(), device=device)

    def engine_frame() -> float:
        _sync(device)
        t = time.perf_counter()
        model.predict_log_ratio(frame, device, batch)
        _sync(device)
        return n / (time.perf_counter() - t)

    def engine_tensor() -> float:
        out = torch.empty(n, device=device)
        _sync(device)
        t = time.perf_counter()
        with torch.inference_mode():
            predict = net.mean_predictor()
            for s in range(0, n, batch):
                out[s:s + batch] = predict(xt[s:s + batch]).clamp_(-2.0, 2.0)
        _sync(device)
        return n / (time.perf_counter() - t)

    def hand() -> float:
        out = torch.empty(n, device=device)
        _sync(device)
        t = time.perf_counter()
        with torch.inference_mode():
            for s in range(0, n, batch):
                out[s:s + batch] = net(xt[s:s + batch]).mean(0).clamp_(-2.0, 2.0)
        _sync(device)
        return n / (time.perf_counter() - t)

    for fn in (engine_frame, engine_tensor, hand):   # warm-up
        fn()
    results: dict[str, list[float]] = {"engine_from_dataframe": [], "engine_on_device_tensor": [],
                                       "hand_written": []}
    for _ in range(rounds):
        results["engine_from_dataframe"].append(engine_frame())
        results["engine_on_device_tensor"].append(engine_tensor())
        results["hand_written"].append(hand())
    med = {name: statistics.median(v) for name, v in results.items()}
    return {"rows": n, "batch": batch, "rows_per_s": med,
            "ratio_engine_tensor_vs_hand": med["engine_on_device_tensor"] / med["hand_written"],
            "ratio_engine_dataframe_vs_hand": med["engine_from_dataframe"] / med["hand_written"]}


# --- 4: a sweep across the devices, with lease checks -------------------------------------------

def _run_cli(env: dict[str, str], *args: str, timeout: float = 540) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "runtime.cli.main", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def sweep_check(device_kind: str, quick: bool) -> dict[str, Any]:
    from datetime import datetime

    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    env = {**os.environ, "MLRUNTIME_HOME": str(work / "home"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                         if p)}
    made = _run_cli(env, "data", "retail", "--out", str(work / "data"), "--json")
    if made.returncode:
        return {"error": made.stderr[-2000:]}
    paths = json.loads(made.stdout.strip().splitlines()[-1])
    instance = {"name": "bench-gpu", "engineId": "engines.retail_sales:RetailSalesEngine",
                "tasks": [{"name": "train", "parameters": [
                    {"key": "trainingDataSetId", "value": paths["training.csv"]},
                    {"key": "epochs", "value": "2" if quick else "5"},
                    {"key": "n_estimators", "value": "4"}]}]}
    target = work / "instance.json"
    target.write_text(json.dumps(instance))
    out: dict[str, Any] = {}
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ"
    for label, extra in (("whole", ["--device", device_kind]),
                         ("half", ["-p", "gpus=0.5"] if device_kind == "cuda" else
                          ["--device", "cpu"])):
        started = time.perf_counter()
        result = _run_cli(env, "sweep", "train", str(target), "-p", "learning_rate=0.003,0.01",
                          "-p", "hidden_size=32,64", "--parallel", "4", "--metric", "MAPE",
                          "--json", *extra)
        wall = time.perf_counter() - started
        if result.returncode:
            out[label] = {"error": result.stderr[-3000:]}
            continue
        table = json.loads(result.stdout.strip().splitlines()[-1])
        sys.path.insert(0, str(REPO))
        from runtime.home import resolve_home
        from runtime.schemas import EXPERIMENT_RUN
        from runtime.registry import Caller, Registry

        registry = Registry.open(resolve_home(env["MLRUNTIME_HOME"]))
        intervals = []
        try:
            for row in table["rows"]:
                doc = registry.get(EXPERIMENT_RUN, Caller.local(), row["runId"])
                task = registry.store.get_run_status(Caller.local().scope, row["runId"])[
                    "status"]["tasks"][0]
                intervals.append({
                    "run": row["runId"], "state": row["state"],
                    "start": datetime.strptime(task["started"], fmt).timestamp(),
                    "end": datetime.strptime(task["ended"], fmt).timestamp(),
                    "devices": doc.get("devices") or []})
        finally:
            registry.close()
        # At every run's start: the shares held per device index by the runs then running.
        worst: dict[int, float] = {}
        most_at_once = 0
        for a in intervals:
            t = a["start"] + 1e-3
            live = [b for b in intervals if b["start"] <= t < b["end"]]
            most_at_once = max(most_at_once, len(live))
            held: dict[int, float] = {}
            for b in live:
                for d in b["devices"]:
                    held[d["index"]] = held.get(d["index"], 0.0) + d["share"]
            for index, share in held.items():
                worst[index] = max(worst.get(index, 0.0), share)
        out[label] = {"wall_s": round(wall, 2), "states": [r["state"] for r in table["rows"]],
                      "best_MAPE": (table.get("best") or {}).get("metric"),
                      "most_runs_at_once": most_at_once,
                      "max_share_held_per_device": {str(k): round(v, 3) for k, v in worst.items()},
                      "lease_ok": all(v <= 1.0 + 1e-9 for v in worst.values()),
                      "devices_seen": sorted({d["index"] for i in intervals for d in i["devices"]})}
    return out


# --- main -------------------------------------------------------------------------------------

def _save(path: Path, report: dict[str, Any]) -> None:   # after each part: a cut-off run keeps some
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--rows", type=int, help="training rows (default 1M on CUDA)")
    parser.add_argument("--epochs", type=int, help="epochs per timed training (default 6)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    parser.add_argument("--sweep", action="store_true", help="run the sweep check on CPU too")
    parser.add_argument("--skip-sweep", action="store_true", help="no sweep check")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench_gpu.json")
    args = parser.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    device = torch.device("cuda:0" if cuda else "cpu")
    big = cuda and not args.quick
    cfg = {"rows": args.rows or (1_000_000 if big else 20_000), "inputs": 16,
           "hidden": 256 if big else 32, "depth": 2, "members": 8 if big else 2,
           "batch": 8192 if big else 1024, "epochs": args.epochs or (6 if big else 3),
           "score_rows": 4_000_000 if big else 50_000}
    report: dict[str, Any] = {"device": torch.cuda.get_device_name(0) if cuda else "cpu (fallback)",
                              "torch": torch.__version__, "config": cfg}
    print(f"bench_gpu on {report['device']} (torch {torch.__version__}); config {cfg}", flush=True)
    x, y = make_data(cfg["rows"], cfg["inputs"])

    # 1: engine vs hand loop, same settings (fp32 with TF32 as the engine's default)
    train = alternate({"engine": lambda: engine_fit(x, y, cfg, device),
                       "hand_written": lambda: hand_loop(x, y, cfg, device)}, args.rounds)
    ratio = train["engine"]["samples_per_s"] / train["hand_written"]["samples_per_s"]
    report["train"] = {**train, "ratio_engine_vs_hand": ratio, "target": 0.95}
    _save(args.out, report)
    print(f"train: engine {train['engine']['samples_per_s']:,.0f} samples/s vs hand-written "
          f"{train['hand_written']['samples_per_s']:,.0f} -> {ratio:.3f}x (target >= 0.95)",
          flush=True)

    # 2: the engine's options
    variants = {"fp32 (tf32 off)": dict(tf32=False), "fp32 + tf32": dict(tf32=True),
                "bf16": dict(precision="bf16")}
    if not args.no_compile:
        variants.update({"fp32 + tf32 + compile": dict(compile=True),
                         "bf16 + compile": dict(precision="bf16", compile=True)})
    options = {}
    for name, kw in variants.items():
        try:
            r = engine_fit(x, y, cfg, device, **kw)
            options[name] = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()}
            print(f"  {name:24s} {r['samples_per_s']:>14,.0f} samples/s  first epoch "
                  f"{r['first_epoch_s']:.2f} s  final loss {r['final_loss']:.6f}", flush=True)
        except Exception as exc:  # e.g. compile without a C compiler on a CPU box
            options[name] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            print(f"  {name:24s} failed: {options[name]['error']}", flush=True)
    report["options"] = options
    _save(args.out, report)

    # 3: scoring
    report["score"] = scoring(cfg, device, args.rounds)
    s = report["score"]["rows_per_s"]
    print(f"score ({report['score']['rows']:,} rows, batch {report['score']['batch']}): engine "
          f"from a DataFrame {s['engine_from_dataframe']:,.0f} rows/s, engine predictor on a "
          f"device tensor {s['engine_on_device_tensor']:,.0f}, hand-written "
          f"{s['hand_written']:,.0f} -> {report['score']['ratio_engine_tensor_vs_hand']:.3f}x "
          f"(from a DataFrame {report['score']['ratio_engine_dataframe_vs_hand']:.3f}x)",
          flush=True)

    # 4: the sweep
    if not args.skip_sweep and (cuda or args.sweep):
        report["sweep"] = sweep_check("cuda" if cuda else "cpu", args.quick)
        print("sweep: " + json.dumps(report["sweep"]), flush=True)
    _save(args.out, report)
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
