"""A longer contract-fuzzing campaign than the suite's (on demand): every phase, every check, more
examples, both server modes, optionally several seeds.

    python benchmarks/fuzz_campaign.py                      # 100 examples per operation, seed 1
    python benchmarks/fuzz_campaign.py --examples 300 --seeds 1 2 3 --max-time 1800

Each run starts its own `run serve --no-execute` on a free loopback port (with a token for the
token mode), writes the local contract (tests/api/fuzz_contract.py: the reference plus the README's
"Differences from the platform") and runs `st run` against it. It prints each run's counts and
the fuzzer's failure summary, keeps the reports under benchmarks/results/fuzz/, and exits 1 when
any run found a difference.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "api"), str(REPO)]

from fuzz_contract import fuzzer_command, prepare_fuzz_run  # noqa: E402
from live_server import live_server  # noqa: E402

TOKEN = "campaign-token"
ALL_PHASES = "examples,coverage,fuzzing,stateful"


def one_run(mode: str, seed: int, examples: int, max_time_s: int | None, out: Path) -> dict:
    with tempfile.TemporaryDirectory(prefix="fuzz-campaign-") as tmp:
        folder = Path(tmp)
        token = TOKEN if mode == "tokens" else None
        extra = ("--token", f"{TOKEN}=campaign") if token else ()
        with live_server(folder / "home", "--no-execute", *extra) as server:
            contract, config = prepare_fuzz_run(folder, server.api_url, token=token)
            report_path = out / f"{mode}-seed{seed}.json"
            command = fuzzer_command(contract, server.api_url, config_path=config,
                                     max_examples=examples, seed=seed, token=token,
                                     phases=ALL_PHASES, max_time_s=max_time_s,
                                     report_path=report_path)
            started = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True, cwd=folder)
            seconds = time.perf_counter() - started
    (out / f"{mode}-seed{seed}.txt").write_text(done.stdout + done.stderr)
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    return {"mode": mode, "seed": seed, "exit": done.returncode, "seconds": round(seconds, 1),
            "generated": report.get("test_cases", {}).get("generated"),
            "failures": [(f["code"], f["title"], f["count"]) for f in report.get("failures", [])],
            "errors": len(report.get("errors", [])), "output": done.stdout}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100, help="examples per operation")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1])
    parser.add_argument("--modes", nargs="+", choices=("no-tokens", "tokens"),
                        default=["no-tokens", "tokens"])
    parser.add_argument("--max-time", type=int, default=None, help="seconds per run (fuzzer's)")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "fuzz")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    found = False
    for seed in args.seeds:
        for mode in args.modes:
            result = one_run(mode, seed, args.examples, args.max_time, args.out)
            print(f"{mode:10s} seed {seed:<6d} {result['generated'] or 0:>7} cases "
                  f"in {result['seconds']:>7.1f} s: exit {result['exit']}, "
                  f"{len(result['failures'])} kinds of failure, {result['errors']} errors",
                  flush=True)
            for code, title, count in result["failures"]:
                print(f"    {code} {title}: {count}")
            if result["exit"] != 0:
                found = True
                start = result["output"].find("=== FAILURES ===")
                print(result["output"][start:start + 6000] if start >= 0 else result["output"][-3000:])
    print(f"reports: {args.out}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
