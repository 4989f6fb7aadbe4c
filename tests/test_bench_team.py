"""benchmarks/bench_team.py runs, and its correctness checks hold at small numbers: two `run serve`
processes on one registry (PostgreSQL where a server can start here, else SQLite) lose and
duplicate no write, fire a schedule once per period across a SIGKILL of the lease holder, and a
killed server's runs are adopted when it restarts. Figures are the benchmark's own business."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pg_cluster

REPO = Path(__file__).resolve().parents[1]


def test_bench_team_quick_checks_pass(tmp_path, request):
    out = tmp_path / "team.json"
    argv = [sys.executable, str(REPO / "benchmarks" / "bench_team.py"), "--quick",
            "--parts", "writes,schedule,failover", "--out", str(out)]
    postgres = pg_cluster.missing() is None
    if postgres:   # the worker's throwaway server, not a second one
        argv += ["--team-store", "postgresql", "--pg-url",
                 request.getfixturevalue("pg_server").url()]
    else:
        argv += ["--team-store", "sqlite"]
    proc = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    result = json.loads(out.read_text())
    assert result["team_store"] == ("postgresql" if postgres else "sqlite")
    assert result["correct"] is True
    parts = result["parts"]
    assert parts["writes"]["refused"] == 0
    for name in ("a", "b"):   # either server lists every accepted write
        assert parts["writes"]["listed"][name] == {
            "instances": parts["writes"]["accepted"]["create"],
            "runs": parts["writes"]["accepted"]["run"],
            "runs_page_total": parts["writes"]["accepted"]["run"]}
    assert parts["schedule"]["fired"] == parts["schedule"]["expected_fires"] >= 2
    assert parts["schedule"]["repeated"] == {} and parts["schedule"]["missed"] == []
    assert set(parts["failover"]["states_while_down"].values()) == {"RUNNING"}
    assert set(parts["failover"]["final_states"].values()) == {"DONE"}
    assert "PASS" in proc.stdout and "FAIL" not in proc.stdout
