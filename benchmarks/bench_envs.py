"""Recipe environments: the first run's environment build with uv's cache warm, beside
`python -m venv` + `pip install` of the same set with pip's cache warm (target: uv >= 5x faster).

Both sides build the "python" profile (pandas 1.5.3, numpy 1.26.4, scikit-learn 1.3.2, scipy,
pyarrow, pydantic, pyyaml) plus a function-based recipe folder (tests/envs/recipes/pandas1_recipe)
into a fresh folder, from the package index, each with its own cache warmed by one unmeasured
build first. The uv side is `runtime.envs.ensure_env` end to end: resolve (an index round trip),
venv, install, `uv pip check`, the import check of the recipe's entry points, freeze, rename; the
baseline does only venv + install, so the comparison leans toward the baseline. Also reported:
`ensure_env` when the environment exists (what second and later runs pay).

    python benchmarks/bench_envs.py [--repeats 3] [--quick] [--keep]
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
RECIPE = ROOT / "tests" / "envs" / "recipes" / "pandas1_recipe"
TARGET_RATIO = 5.0

sys.path.insert(0, str(ROOT))

from runtime.envs import PROFILES, ensure_env, envs_dir, remove_env  # noqa: E402
from runtime.envs.interpreters import own_python  # noqa: E402


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def uv_first_run(home: Path, recipe: Path, profile: str) -> float:
    """A first run of the recipe: its environment does not exist, uv's cache is warm."""
    for record_dir in envs_dir(home).glob("[0-9a-f]*"):
        remove_env(home, record_dir.name)
    shutil.rmtree(envs_dir(home) / ".resolved", ignore_errors=True)   # nothing remembered
    t0 = time.perf_counter()
    info = ensure_env(recipe_dir=recipe, requirements=[], profile=profile, home=home)
    elapsed = time.perf_counter() - t0
    assert not info.cached, "the environment should have been built"
    return elapsed


def uv_existing(home: Path, recipe: Path, profile: str) -> float:
    t0 = time.perf_counter()
    info = ensure_env(recipe_dir=recipe, requirements=[], profile=profile, home=home)
    elapsed = time.perf_counter() - t0
    assert info.cached
    return elapsed


def pip_first_run(work: Path, recipe: Path, profile: str, cache: Path) -> float:
    """`python -m venv` + `pip install` of the same set, pip's own cache warm."""
    target = work / "pip-env"
    shutil.rmtree(target, ignore_errors=True)
    env = {**_clean_env(), "PIP_CACHE_DIR": str(cache)}
    python = str(own_python().path)
    t0 = time.perf_counter()
    subprocess.run([python, "-m", "venv", str(target)], check=True, env=env)
    subprocess.run([str(target / "bin" / "python"), "-m", "pip", "install", "--quiet",
                    *PROFILES[profile].requirements, str(recipe)], check=True, env=env)
    elapsed = time.perf_counter() - t0
    shutil.rmtree(target, ignore_errors=True)
    return elapsed


def _environment() -> dict:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=ROOT).stdout.strip()
    from runtime.envs import find_uv
    uv = find_uv()
    uv_version = subprocess.run([uv, "--version"], capture_output=True, text=True).stdout.strip() if uv else None
    pip_version = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True,
                                 text=True).stdout.split()[1:2]
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "uv": uv_version, "pip": pip_version,
            "git_commit": commit, "load_avg_at_start": os.getloadavg()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="measured builds per side (default 3)")
    parser.add_argument("--quick", action="store_true", help="one measured build per side")
    parser.add_argument("--profile", default="python", choices=sorted(PROFILES))
    parser.add_argument("--keep", action="store_true", help="keep the temporary home")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else max(1, args.repeats)

    env = _environment()
    print(f"bench_envs: profile {args.profile} + recipe {RECIPE.name}, {repeats} measured build(s) "
          f"per side, load average {env['load_avg_at_start'][0]:.2f} on {env['cpus']} cores, "
          f"{env['uv']}, pip {''.join(env['pip'])}\n")
    work = Path(tempfile.mkdtemp(prefix="bench-envs-"))
    try:
        recipe = Path(shutil.copytree(RECIPE, work / "recipe"))
        home = work / "home"
        pip_cache = work / "pip-cache"
        print("  ... warming uv's cache (one unmeasured build)", file=sys.stderr, flush=True)
        uv_first_run(home, recipe, args.profile)
        print("  ... warming pip's cache (one unmeasured build)", file=sys.stderr, flush=True)
        pip_first_run(work, recipe, args.profile, pip_cache)

        uv_s, pip_s = [], []
        for i in range(repeats):   # interleaved, so load changes hit both sides alike
            uv_s.append(uv_first_run(home, recipe, args.profile))
            pip_s.append(pip_first_run(work, recipe, args.profile, pip_cache))
            print(f"  ... round {i + 1}: uv {uv_s[-1]:.1f} s, venv + pip {pip_s[-1]:.1f} s",
                  file=sys.stderr, flush=True)
        existing = sorted(uv_existing(home, recipe, args.profile) for _ in range(5))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")

    uv_med, pip_med = statistics.median(uv_s), statistics.median(pip_s)
    ratio = pip_med / uv_med
    verdict = "PASS" if ratio >= TARGET_RATIO else "FAIL"
    rows = [("ensure_env, uv cache warm (first run)", uv_med, min(uv_s), max(uv_s)),
            ("python -m venv + pip install, pip cache warm", pip_med, min(pip_s), max(pip_s))]
    print(f"{'first-run environment build':<48} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, med, lo, hi in rows:
        print(f"{name:<48} {med:>9.2f} {lo:>7.2f} {hi:>7.2f}")
    print(f"\nratio (venv + pip) / uv: {ratio:.1f}x  (target >= {TARGET_RATIO:g}x): {verdict}")
    print(f"ensure_env of an existing environment (second and later runs): "
          f"median {statistics.median(existing) * 1000:.0f} ms over {len(existing)}")

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"envs-{stamp}.json"
    path.write_text(json.dumps({
        "benchmark": "envs", "timestamp": stamp, "args": vars(args), "environment": env,
        "uv_first_run_s": uv_s, "pip_first_run_s": pip_s, "ratio": ratio,
        "target_ratio": TARGET_RATIO, "verdict": verdict, "existing_env_s": existing}, indent=2))
    print(f"results: {path.relative_to(ROOT)}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
