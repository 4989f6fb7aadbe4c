"""Team server benchmark: two `run serve` processes on one registry, and the registry's read latency
on PostgreSQL against SQLite measured in the same run (the baseline).

Starts a throwaway PostgreSQL server (tests/pg_cluster.py: Debian's initdb + pg_ctl on a free
loopback port) and measures the goals of a team's server:

1. writes:   two servers (their own homes and host ids, one registry, one shared artifact folder)
             take 1,000 concurrent writes, MLInstance creates and run posts spread over both;
             a listing on either server shows every one, none lost, none duplicated.
2. schedule: one Experiment schedule fires every 10 s for 2 minutes with both servers up; the
             server holding the scheduler lease is SIGKILLed midway: every fire exactly once.
3. failover: a server SIGKILLed while its runs run: the other keeps serving (and does not fail
             them); the killed one, restarted, adopts its runs and records them DONE.
4. latency:  GET by id and a filtered listing at 100,000 MLInstances, in-process and over HTTP,
             PostgreSQL beside SQLite: PostgreSQL within 2x of SQLite, listing p50 <= 20 ms.

    python benchmarks/bench_team.py                     # ~6 minutes on 2 cores
    python benchmarks/bench_team.py --quick             # small numbers: a smoke test (< 1 minute)
    python benchmarks/bench_team.py --parts writes,schedule --team-store sqlite

Exits 1 when a correctness check fails (a write lost or duplicated, a fire missed or repeated, a
run not adopted, a request the surviving server refused); latency goals are reported, not enforced.
"""
from __future__ import annotations

import argparse
import collections
import concurrent.futures
import datetime as dt
import json
import os
import platform
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
sys.path.insert(0, str(BENCH_DIR))
sys.path.insert(0, str(REPO))

from _common import LOOPBACK, ServerProcess, free_port, percentile, table  # noqa: E402

RESULTS_DIR = BENCH_DIR / "results"
PARTS = ("writes", "schedule", "failover", "latency")

# The goals (issue "A team's server"), on this machine.
GOAL_PG_RATIO = 2.0          # PostgreSQL latency within 2x of SQLite's
GOAL_LIST_P50_MS = 20.0      # a filtered listing's p50 at 100,000 MLInstances
API = "/data/sensei"
HEADERS = {"x-gw-ims-org-id": "local", "x-sandbox-name": "prod"}


@dataclass
class Sizes:
    writes: int = 1000          # MLInstance creates + run posts, half each
    threads: int = 16           # concurrent clients
    interval_s: int = 10        # the schedule's period (divides 60: a cron seconds field)
    window_s: float = 120.0     # how long it fires
    run_sleep_ms: int = 4000    # a run of the failover part, per stage
    instances: int = 100_000    # the latency part's registry
    get_iters: int = 2000
    list_iters: int = 300
    http_iters: int = 500
    scheduler_ttl_s: Optional[float] = None   # MLRUNTIME_SCHEDULER_TTL_S; None: the default (15)

    @classmethod
    def quick(cls) -> "Sizes":
        # A 2 s scheduler lease: the takeover (and so the smoke run) takes seconds, not 15.
        return cls(writes=40, threads=8, interval_s=5, window_s=15.0, run_sleep_ms=2000,
                   instances=2000, get_iters=200, list_iters=50, http_iters=100,
                   scheduler_ttl_s=2.0)


# --------------------------------------------------------------------------------------------
# Stores


def pg_cluster_module() -> Any:
    sys.path.insert(0, str(REPO / "tests"))
    import pg_cluster

    return pg_cluster


class Stores:
    """Where registries live: SQLite files under a scratch folder, PostgreSQL databases on one
    throwaway server started on first use (None, with the reason, where none can start)."""

    def __init__(self, scratch: Path, pg_url: Optional[str] = None) -> None:
        self.scratch = scratch
        self.cluster: Any = ExternalServer(pg_url) if pg_url else None
        self.pg_missing: Optional[str] = None
        self._started = False
        self._ours = False

    def url(self, kind: str, name: str) -> str:
        if kind == "sqlite":
            folder = self.scratch / f"sqlite-{name}"
            folder.mkdir(parents=True, exist_ok=True)
            return f"sqlite:///{folder / 'registry.db'}"
        cluster = self.postgres()
        if cluster is None:
            raise RuntimeError(f"no PostgreSQL server: {self.pg_missing}")
        return cluster.create_database("bench_team_" + name.replace("-", "_"))

    def postgres(self) -> Any:
        if not self._started:
            self._started = True
            pg = pg_cluster_module()
            if self.cluster is None:
                self.pg_missing = pg.missing()
                if self.pg_missing is None:
                    self.cluster, self._ours = pg.PgCluster().start(), True
            if self.cluster is not None:
                pg.wait_ready(self.cluster.url())
                self.pg_missing = postgres_store_missing(self.cluster)
        return self.cluster if self.pg_missing is None else None

    def close(self) -> None:
        if self.cluster is not None and self._ours:
            self.cluster.stop()
        self.cluster = None


class ExternalServer:
    """A PostgreSQL server the benchmark did not start (`--pg-url`): its databases are made
    (and dropped first) through that URL's user, who needs CREATEDB."""

    def __init__(self, url: str) -> None:
        self.base = url

    def url(self, db: Optional[str] = None) -> str:
        if db is None:
            return self.base
        head, _, _ = self.base.rpartition("/")
        return f"{head}/{db}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.base, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def postgres_store_missing(cluster: Any) -> Optional[str]:
    """Why the runtime cannot open a PostgreSQL registry (this version has no such store), or None."""
    from runtime.store import open_store

    url = cluster.create_database("bench_team_probe")
    try:
        open_store(url).close()
    except Exception as exc:   # StoreError until the PostgreSQL store exists; report, run SQLite
        return f"open_store({url!r}) failed: {exc}"
    return None


def open_registry(url: str, root: Path) -> Any:
    from runtime.home import Home
    from runtime.registry import Registry
    from runtime.store import open_store

    return Registry(open_store(url), Home(root=root, store_url=url))


# --------------------------------------------------------------------------------------------
# Two servers on one registry


class Team:
    """`run serve` processes on one registry URL, each with its own home and host id, sharing
    one artifact folder. Only processes this object started are ever signalled."""

    def __init__(self, url: str, root: Path, names: tuple[str, ...] = ("a", "b"),
                 scheduler_ttl_s: Optional[float] = None) -> None:
        self.url = url
        self.scheduler_ttl_s = scheduler_ttl_s
        self.root = root
        self.artifacts = root / "shared-artifacts"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self.ports = {name: free_port() for name in names}
        self.servers: dict[str, Optional[ServerProcess]] = {name: None for name in names}
        self.starts = collections.Counter()

    def env(self, name: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("MLRUNTIME_TOKENS", "MLRUNTIME_ORG", "MLRUNTIME_SANDBOX",
                            "MLRUNTIME_SCHEDULER", "RAY_ADDRESS")}
        env.update({"MLRUNTIME_HOME": str(self.home(name)), "MLRUNTIME_DB": self.url,
                    "MLRUNTIME_STORE": self.url, "MLRUNTIME_HOST_ID": f"bench-host-{name}",
                    "MLRUNTIME_ARTIFACTS": str(self.artifacts), "PYTHONUNBUFFERED": "1"})
        if self.scheduler_ttl_s:
            env["MLRUNTIME_SCHEDULER_TTL_S"] = f"{self.scheduler_ttl_s:g}"
        return env

    def home(self, name: str) -> Path:
        return self.root / f"home-{name}"

    def start(self, name: str) -> ServerProcess:
        self.starts[name] += 1
        port = self.ports[name]
        argv = [sys.executable, "-m", "runtime.cli.main", "serve", "--host", LOOPBACK,
                "--port", str(port), "--home", str(self.home(name)), "--log-level", "warning"]
        server = ServerProcess(f"serve-{name}-{self.starts[name]}", argv, port,
                               f"{API}/engines?limit=1", self.root, env=self.env(name))
        self.servers[name] = server   # stopped by stop() even if its start is interrupted
        server.start(timeout_s=120)
        return server

    def start_all(self) -> None:
        """Every server at once (each start mostly waits on imports and the store)."""
        with concurrent.futures.ThreadPoolExecutor(len(self.servers)) as pool:
            list(pool.map(self.start, list(self.servers)))

    def pid(self, name: str) -> Optional[int]:
        server = self.servers[name]
        return server.proc.pid if server and server.proc else None

    def kill(self, name: str) -> None:
        """SIGKILL, as a host that dies: nothing is cleaned up by the server itself."""
        server = self.servers[name]
        if server is not None and server.proc is not None:
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait(timeout=30)
            server.stop()
        self.servers[name] = None

    def stop(self) -> None:
        running = [s for s in self.servers.values() if s is not None]
        if running:
            with concurrent.futures.ThreadPoolExecutor(len(running)) as pool:
                list(pool.map(lambda server: server.stop(), running))
        self.servers = {name: None for name in self.servers}

    def client(self, name: str, **kw: Any) -> Any:
        import httpx

        return httpx.Client(base_url=f"http://{LOOPBACK}:{self.ports[name]}{API}",
                            headers=HEADERS, timeout=60, **kw)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.root.glob("serve-*.log")))


def ok(response: Any, *codes: int) -> Any:
    if response.status_code not in (codes or (200,)):
        raise RuntimeError(f"{response.request.method} {response.request.url} answered "
                           f"{response.status_code}: {response.text[:400]}")
    return response.json()


def noop_experiment(client: Any, data: Path, name: str, sleep_ms: int = 0,
                    schedule: Optional[dict[str, Any]] = None) -> tuple[str, str, str]:
    """(Engine, MLInstance, Experiment) ids: an Experiment whose train runs the noop engine."""
    if not data.exists():
        data.write_text("a,b\n1,2\n3,4\n")
    engine = ok(client.post("/engines", json={
        "name": f"noop {name}", "type": "Python",
        "artifacts": {"default": {"image": {"location": "noop", "name": "noop"}}}}), 201)
    instance = ok(client.post("/mlInstances", json={
        "name": f"noop {name}", "engineId": engine["id"],
        "tasks": [{"name": "train", "parameters": [
            {"key": "sleep_ms", "value": str(sleep_ms)},
            {"key": "trainingDataSetId", "value": str(data)}]}]}), 201)
    body: dict[str, Any] = {"name": name, "mlInstanceId": instance["id"]}
    if schedule:
        body["template"] = {"schedule": schedule}
    experiment = ok(client.post("/experiments", json=body), 201)
    return engine["id"], instance["id"], experiment["id"]


def list_all(client: Any, path: str, params: Optional[dict[str, str]] = None) -> list[dict]:
    """Every document of a listing, page by page (100 each)."""
    out: list[dict] = []
    start = 0
    while True:
        page = ok(client.get(path, params={**(params or {}), "start": str(start),
                                           "limit": "100"}))
        children = page.get("children") or []
        out.extend(children)
        start += len(children)
        if not children or start >= page["_page"]["totalCount"]:
            return out


def runs_page_total(client: Any, experiment_id: str) -> int:
    """What the runs page (its table's API) counts for an Experiment."""
    url = client.base_url.copy_with(path="/ui/api/runs")
    return ok(client.get(url, params={"experimentId": experiment_id,
                                                         "limit": "1"}))["total"]


def run_state(client: Any, experiment_id: str, run_id: str) -> dict[str, Any]:
    status = ok(client.get(f"/experiments/{experiment_id}/runs/{run_id}/status"))
    return status["status"]["tasks"][0]


def wait_for(check: Callable[[], Any], timeout_s: float, what: str) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(0.2)


# --------------------------------------------------------------------------------------------
# 1. Concurrent writes over two servers


def part_writes(team: Team, sizes: Sizes, data: Path) -> dict[str, Any]:
    names = list(team.servers)
    with team.client(names[0]) as a:
        _, _, experiment_id = noop_experiment(a, data, "team writes")
        engine_id = ok(a.post("/engines", json={   # the created MLInstances' own Engine
            "name": "team writes", "type": "Python",
            "artifacts": {"default": {"image": {"location": "noop", "name": "noop"}}}}), 201)["id"]
    clients = {n: team.client(n, limits=_limits(sizes.threads)) for n in names}
    creates = sizes.writes // 2
    ops = [("create", i) for i in range(creates)] + [("run", i) for i in range(sizes.writes - creates)]
    random.Random(7).shuffle(ops)

    def one(op: tuple[str, int]) -> tuple[str, str, int, Optional[str], str]:
        kind, i = op
        server = names[i % len(names)]
        client = clients[server]
        if kind == "create":
            r = client.post("/mlInstances", json={"name": f"team-{i:05d}", "engineId": engine_id,
                                                  "tasks": [{"name": "train", "parameters": [
                                                      {"key": "sleep_ms", "value": "0"}]}]})
        else:
            r = client.post(f"/experiments/{experiment_id}/runs", json={"mode": "train"})
        ident = r.json().get("id") if r.status_code == 201 else None
        return kind, server, r.status_code, ident, "" if ident else r.text[:300]

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(sizes.threads) as pool:
        results = list(pool.map(one, ops))
    elapsed = time.perf_counter() - t0
    accepted = {k: [r[3] for r in results if r[0] == k and r[3]] for k in ("create", "run")}
    refused = [r for r in results if not r[3]]
    per_server = collections.Counter(r[1] for r in results if r[3])

    seen: dict[str, Any] = {}
    for n in names:
        instances = list_all(clients[n], "/mlInstances", {"property": f"engineId=={engine_id}"})
        runs = list_all(clients[n], f"/experiments/{experiment_id}/runs")
        seen[n] = {"instances": [d["id"] for d in instances],
                   "instance_names": [d["name"] for d in instances],
                   "runs": [d["id"] for d in runs],
                   "runs_page_total": runs_page_total(clients[n], experiment_id)}
    problems: list[str] = []
    for n, got in seen.items():
        for kind, listed in (("create", got["instances"]), ("run", got["runs"])):
            what = "MLInstances" if kind == "create" else "runs"
            lost = set(accepted[kind]) - set(listed)
            extra = set(listed) - set(accepted[kind])
            dupes = [i for i, c in collections.Counter(listed).items() if c > 1]
            if lost:
                problems.append(f"server {n} lists {len(lost)} accepted {what} less (lost)")
            if extra:
                problems.append(f"server {n} lists {len(extra)} {what} nobody created")
            if dupes:
                problems.append(f"server {n} lists {len(dupes)} {what} twice")
        name_dupes = [x for x, c in collections.Counter(got["instance_names"]).items() if c > 1]
        if name_dupes:
            problems.append(f"server {n}: {len(name_dupes)} MLInstance names created twice")
        if got["runs_page_total"] != len(accepted["run"]):
            problems.append(f"server {n}'s runs page counts {got['runs_page_total']} runs, "
                            f"{len(accepted['run'])} were posted")
    if refused:
        problems.append(f"{len(refused)} writes refused, e.g. {refused[0][2]}: {refused[0][4]}")

    # The posted runs would keep both servers busy for minutes: cancel what has not ended.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda rid: clients[names[0]].post(
            f"/experiments/{experiment_id}/runs/{rid}/cancel"), accepted["run"]))
    for c in clients.values():
        c.close()
    return {"writes": len(ops), "creates": creates, "run_posts": len(ops) - creates,
            "accepted": {k: len(v) for k, v in accepted.items()}, "refused": len(refused),
            "per_server": dict(per_server), "elapsed_s": round(elapsed, 2),
            "writes_per_s": round(len(ops) / elapsed, 1),
            "listed": {n: {"instances": len(g["instances"]), "runs": len(g["runs"]),
                           "runs_page_total": g["runs_page_total"]} for n, g in seen.items()},
            "problems": problems, "pass": not problems}


def _limits(threads: int) -> Any:
    import httpx

    return httpx.Limits(max_connections=threads, max_keepalive_connections=threads)


# --------------------------------------------------------------------------------------------
# 2. One schedule, two servers, the lease holder SIGKILLed midway


_DUE = re.compile(r"\(due (\S+Z)\)")
KILL_BEFORE_DUE_S = 0.5


def part_schedule(team: Team, sizes: Sizes, data: Path, probe_url: str) -> dict[str, Any]:
    names = list(team.servers)
    interval = sizes.interval_s
    with team.client(names[0]) as a:
        _, _, experiment_id = noop_experiment(
            a, data, "team schedule",
            schedule={"cron": f"* * * * * */{interval}", "mode": "train"})
    created_s = time.time()
    window_end_s = created_s + sizes.window_s
    # Killed midway, half a second before a due time: the worst moment, as the fire then waits
    # for the whole takeover (a kill just after a fire would have a period's slack to hide it).
    kill_at_s = _slots(created_s + sizes.window_s / 2, window_end_s, interval)[0] - KILL_BEFORE_DUE_S
    time.sleep(max(0.0, kill_at_s - time.time()))
    holder = lease_holder(probe_url, team)
    killed = holder or names[0]
    killed_at_s = time.time()
    team.kill(killed)
    survivor = next(n for n in names if n != killed)
    time.sleep(max(0.0, window_end_s - time.time()))
    # Every slot of the window is due by now; give the survivor time to take over and fire.
    expected = [s for s in _slots(created_s, window_end_s, interval)]
    client = team.client(survivor)
    dues: list[str] = []
    late_s: dict[str, float] = {}   # due -> how long after its due time its run was created

    def all_fired() -> bool:
        nonlocal dues
        runs = list_all(client, f"/experiments/{experiment_id}/runs")
        dues = []
        for r in runs:
            m = _DUE.search(r.get("description") or "")
            if m:
                dues.append(m.group(1))
                late_s[m.group(1)] = _seconds(r["created"]) - _seconds(m.group(1))
        return {_iso(s) for s in expected} <= set(dues)

    try:
        wait_for(all_fired, timeout_s=interval + 30, what="every slot's fire")
    except TimeoutError:
        pass
    # The schedule off (not the Experiment deleted: a server restarted after its queued runs
    # were deleted does not start), the killed server back, and the fires' runs ended, so they
    # hold no slot of the next part.
    doc = ok(client.get(f"/experiments/{experiment_id}"))
    ok(client.put(f"/experiments/{experiment_id}", json={k: v for k, v in doc.items()
                                                           if k != "template"}))
    team.start(killed)
    wait_for(lambda: all(_terminal(run_state(client, experiment_id, r["id"])) for r in
                         list_all(client, f"/experiments/{experiment_id}/runs")),
             60, "the scheduled runs to end")
    client.close()
    counts = collections.Counter(dues)
    expected_iso = [_iso(s) for s in expected]
    missed = [d for d in expected_iso if counts[d] == 0]
    repeated = {d: c for d, c in counts.items() if c > 1}
    problems = []
    if missed:
        problems.append(f"{len(missed)} fires missed: {missed[:5]}")
    if repeated:
        problems.append(f"fires repeated: {dict(list(repeated.items())[:5])}")
    return {"interval_s": interval, "window_s": sizes.window_s,
            "scheduler_ttl_s": sizes.scheduler_ttl_s or "default", "expected_fires": len(expected),
            "fired": sum(counts[d] for d in expected_iso), "after_window": len(
                [d for d in counts if d not in set(expected_iso)]),
            "killed": killed, "killed_was_lease_holder": holder is not None,
            "killed_after_s": round(killed_at_s - created_s, 1), "killed_at": _iso(killed_at_s),
            "created_at": _iso(created_s), "dues": sorted(counts), "missed": missed,
            "fire_late_s": {"p50": round(_median([late_s[d] for d in expected_iso if d in late_s]), 2),
                            "max": round(max([late_s[d] for d in expected_iso if d in late_s],
                                             default=float("nan")), 2)},
            "repeated": repeated, "problems": problems, "pass": not problems}


def _slots(after_s: float, until_s: float, interval: int) -> list[float]:
    first = (int(after_s) // interval + 1) * interval
    return [float(s) for s in range(first, int(until_s) + 1, interval)]


def _seconds(text: str) -> float:
    from runtime.schedules import seconds

    return seconds(text) or 0.0


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return percentile(ordered, 50) if ordered else float("nan")


def _iso(epoch_s: float) -> str:
    from runtime.schedules import iso

    return iso(epoch_s)


def lease_holder(url: str, team: Team) -> Optional[str]:
    """Which of the team's servers holds the scheduler lease (read through the store)."""
    from runtime.scheduler import LEASE_NAME

    registry = open_registry(url, team.root / "probe")
    try:
        held = registry.schedules.lease_holder(LEASE_NAME)
    finally:
        registry.close()
    if not held:
        return None
    pids = set(re.findall(r"\d+", held[0]))
    for name in team.servers:
        if str(team.pid(name)) in pids or f"bench-host-{name}" in held[0]:
            return name
    return None


# --------------------------------------------------------------------------------------------
# 3. A server SIGKILLed while its runs run


def part_failover(team: Team, sizes: Sizes, data: Path) -> dict[str, Any]:
    names = list(team.servers)
    victim, survivor = names[0], names[1]
    with team.client(victim) as a:
        _, _, experiment_id = noop_experiment(a, data, "team failover", sleep_ms=sizes.run_sleep_ms)
        runs = [ok(a.post(f"/experiments/{experiment_id}/runs", json={"mode": "train"}), 201)["id"]
                for _ in range(2)]
        wait_for(lambda: all(run_state(a, experiment_id, r)["state"] == "RUNNING" for r in runs),
                 60, "the victim's runs to run")
    team.kill(victim)
    killed_at = time.monotonic()
    problems: list[str] = []
    latencies: list[float] = []
    errors: list[str] = []
    with team.client(survivor) as b:
        own = ok(b.post(f"/experiments/{experiment_id}/runs",
                        json={"mode": "train", "tasks": [{"name": "train", "parameters": [
                            {"key": "sleep_ms", "value": "0"}]}]}), 201)["id"]
        requests = [lambda: b.get("/mlInstances", params={"limit": "25"}),
                    lambda: b.get(f"/experiments/{experiment_id}/runs"),
                    lambda: b.get(f"/experiments/{experiment_id}/runs/{runs[0]}/status")]
        while time.monotonic() - killed_at < min(5.0, sizes.run_sleep_ms / 2000):
            for call in requests:
                t0 = time.perf_counter()
                r = call()
                latencies.append((time.perf_counter() - t0) * 1000)
                if r.status_code != 200:
                    errors.append(f"{r.request.url.path}: {r.status_code}")
        states_while_down = {r: run_state(b, experiment_id, r)["state"] for r in runs}
        # Back at once: down longer than its host lease (MLRUNTIME_HOST_TTL_S, 30 s), its runs
        # would rightly be failed by the survivor ("host H stopped answering").
        t0 = time.monotonic()
        team.start(victim)
        restart_s = time.monotonic() - t0
        own_state = wait_for(lambda: _terminal(run_state(b, experiment_id, own)), 60,
                             "the survivor's own run")
    for r, state in states_while_down.items():
        if state != "RUNNING":
            problems.append(f"run {r} of the killed server was {state} while it was down "
                            "(another host's run must be left alone)")
    if errors:
        problems.append(f"the surviving server refused {len(errors)} requests: {errors[:3]}")
    if own_state["state"] != "DONE":
        problems.append(f"the surviving server's run ended {own_state['state']}: "
                        f"{own_state.get('message')}")
    with team.client(victim) as a:
        final = {r: wait_for(lambda r=r: _terminal(run_state(a, experiment_id, r)),
                             sizes.run_sleep_ms / 1000 * 3 + 60, f"run {r} to end") for r in runs}
    for r, task in final.items():
        if task["state"] != "DONE":
            problems.append(f"run {r} ended {task['state']} after the restart, not adopted: "
                            f"{task.get('message')}")
    lat = sorted(latencies)
    return {"runs": len(runs), "run_sleep_ms": sizes.run_sleep_ms,
            "survivor_requests": len(latencies), "survivor_errors": len(errors),
            "survivor_p50_ms": round(percentile(lat, 50), 2) if lat else None,
            "survivor_p99_ms": round(percentile(lat, 99), 2) if lat else None,
            "states_while_down": states_while_down, "restart_s": round(restart_s, 1),
            "final_states": {r: t["state"] for r, t in final.items()},
            "problems": problems, "pass": not problems}


def _terminal(task: dict[str, Any]) -> Optional[dict[str, Any]]:
    return task if task["state"] in ("DONE", "FAILED", "ABORTED") else None


# --------------------------------------------------------------------------------------------
# 4. Latency at N MLInstances: PostgreSQL beside SQLite


def seed(url: str, root: Path, n: int, rng: random.Random) -> dict[str, Any]:
    """N MLInstances through the registry (validation, parent check, insert), 10,000 per store
    transaction, as bench_registry seeds: no HTTP."""
    from bench_registry import CALLER, ENGINES, _engine_body, _instance_body
    from runtime.schemas import MLINSTANCE

    registry = open_registry(url, root)
    try:
        engine_ids = [registry.create_engine(CALLER, _engine_body(k))["id"] for k in range(ENGINES)]
        ids: list[str] = []
        t0 = time.perf_counter()
        for start in range(0, n, 10_000):
            with registry.store.transaction():
                for i in range(start, min(n, start + 10_000)):
                    ids.append(registry.create(MLINSTANCE, CALLER, _instance_body(
                        i, engine_ids[i % ENGINES], rng))["id"])
        seconds = time.perf_counter() - t0
    finally:
        registry.close()
    return {"engine_ids": engine_ids, "ids": ids, "seed_s": round(seconds, 1),
            "seed_per_s": round(n / seconds)}


def _stats(samples_ms: list[float]) -> dict[str, float]:
    ms = sorted(samples_ms)
    return {"n": len(ms), "p50_ms": round(percentile(ms, 50), 3),
            "p99_ms": round(percentile(ms, 99), 3), "mean_ms": round(sum(ms) / len(ms), 3)}


def _samples(call: Callable[[int], Any], iterations: int, offset: int = 0) -> list[float]:
    out = []
    for i in range(offset, offset + iterations):
        t0 = time.perf_counter_ns()
        call(i)
        out.append((time.perf_counter_ns() - t0) / 1e6)
    return out


ROUNDS = 4   # the stores' cases take turns, so a change in the machine's load hits both alike


@dataclass
class LatencySetup:
    kind: str
    url: str
    root: Path
    seeded: dict[str, Any]
    registry: Any = None
    team: Optional[Team] = None
    client: Any = None

    def calls(self, sample: list[str]) -> dict[str, Callable[[int], Any]]:
        from bench_registry import CALLER
        from runtime.listing import parse_list_query
        from runtime.schemas import MLINSTANCE

        engines = self.seeded["engine_ids"]
        queries = [parse_list_query(MLINSTANCE, {"property": f"engineId=={e}",
                                                 "orderby": "-created", "limit": "25"})
                   for e in engines]
        registry, client = self.registry, self.client
        out = {"get": lambda i: registry.get(MLINSTANCE, CALLER, sample[i % len(sample)]),
               "list": lambda i: registry.list(MLINSTANCE, CALLER, queries[i % len(queries)])}
        if client is not None:
            out["http_get"] = lambda i: ok(client.get(f"/mlInstances/{sample[i % len(sample)]}"))
            out["http_list"] = lambda i: ok(client.get("/mlInstances", params={
                "property": f"engineId=={engines[i % len(engines)]}", "orderby": "-created",
                "limit": "25"}))
        return out

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self.team is not None:
            self.team.stop()
        if self.registry is not None:
            self.registry.close()


def vacuum_analyze(url: str) -> float:
    """What PostgreSQL's autovacuum does within a minute or so of a bulk load (visibility map,
    planner statistics), done at once so the figures do not depend on its timing."""
    import psycopg

    t0 = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return time.perf_counter() - t0


def part_latency(stores: Stores, sizes: Sizes, seed_value: int) -> dict[str, Any]:
    kinds = ["sqlite"] + (["postgresql"] if stores.postgres() is not None else [])
    setups: dict[str, LatencySetup] = {}
    out: dict[str, Any] = {"instances": sizes.instances, "stores": {}}
    iters = {"get": sizes.get_iters, "list": sizes.list_iters, "http_get": sizes.http_iters,
             "http_list": max(20, sizes.http_iters // 2)}
    try:
        for kind in kinds:
            url = stores.url(kind, f"latency-{sizes.instances}")
            root = stores.scratch / f"latency-{kind}"
            root.mkdir(parents=True, exist_ok=True)
            setup = LatencySetup(kind, url, root, seed(url, root, sizes.instances,
                                                       random.Random(seed_value)))
            setups[kind] = setup
            setup.registry = open_registry(url, root)
            out["stores"][kind] = {"seed": {k: v for k, v in setup.seeded.items()
                                            if k.startswith("seed")}}
        rng = random.Random(seed_value + 1)
        ids = setups["sqlite"].seeded["ids"]   # the same seed: the same rows, other ids
        picks = [rng.randrange(len(ids)) for _ in range(max(iters.values()))]
        samples = {k: [setups[k].seeded["ids"][i] for i in picks] for k in kinds}
        if "postgresql" in setups:   # as seeded, before the vacuum: in-process only
            pg = setups["postgresql"]
            calls = pg.calls(samples["postgresql"])
            for call in calls.values():
                _samples(call, 10)   # warm-up: the pool's connections
            out["stores"]["postgresql"]["as_seeded"] = {
                case: _stats(_samples(calls[case], iters[case])) for case in ("get", "list")}
            out["stores"]["postgresql"]["vacuum_analyze_s"] = round(vacuum_analyze(pg.url), 1)
        for setup in setups.values():
            setup.team = Team(setup.url, setup.root, names=("solo",))
        with concurrent.futures.ThreadPoolExecutor(len(setups)) as pool:
            list(pool.map(lambda st: st.team.start("solo"), setups.values()))
        for setup in setups.values():
            setup.client = setup.team.client("solo")
        measured: dict[str, dict[str, list[float]]] = {k: collections.defaultdict(list)
                                                       for k in kinds}
        all_calls = {k: setups[k].calls(samples[k]) for k in kinds}
        for kind in kinds:   # warm-up: connections, caches, the servers' first requests
            for case, call in all_calls[kind].items():
                _samples(call, 10)
        for r in range(ROUNDS):
            for case, n in iters.items():
                for kind in kinds:
                    per_round = max(5, n // ROUNDS)
                    measured[kind][case] += _samples(all_calls[kind][case], per_round,
                                                     offset=r * per_round)
        for kind in kinds:
            out["stores"][kind].update({case: _stats(v) for case, v in measured[kind].items()})
    finally:
        for setup in setups.values():
            setup.close()
    goals: dict[str, Any] = {}
    pg = out["stores"].get("postgresql")
    for case in iters:
        base = out["stores"]["sqlite"][case]
        entry: dict[str, Any] = {"sqlite_p50_ms": base["p50_ms"], "sqlite_p99_ms": base["p99_ms"]}
        if pg:
            entry.update(pg_p50_ms=pg[case]["p50_ms"], pg_p99_ms=pg[case]["p99_ms"],
                         ratio_p50=round(pg[case]["p50_ms"] / base["p50_ms"], 2),
                         ratio_p99=round(pg[case]["p99_ms"] / base["p99_ms"], 2))
            entry["within_2x"] = entry["ratio_p50"] <= GOAL_PG_RATIO
        goals[case] = entry
    out["compare"] = goals
    out["postgresql"] = "measured" if pg else f"not measured: {stores.pg_missing}"
    return out


# --------------------------------------------------------------------------------------------
# Report


def report(result: dict[str, Any]) -> list[list[Any]]:
    rows: list[list[Any]] = []
    parts = result["parts"]
    if "writes_sqlite" in parts:
        w = parts["writes_sqlite"]
        rows.append(["writes, SQLite", "(baseline: the same writes, two servers on one SQLite file)",
                     f"{w['accepted']['create']} creates + {w['accepted']['run']} runs in "
                     f"{w['elapsed_s']} s ({w['writes_per_s']}/s), {w['refused']} refused",
                     _verdict(w["pass"])])
    if "writes" in parts:
        w = parts["writes"]
        listed = "; ".join(f"{n}: {v['instances']} MLInstances, {v['runs']} runs "
                           f"(runs page {v['runs_page_total']})" for n, v in w["listed"].items())
        rows.append(["writes", f"{w['writes']:,} concurrent writes over 2 servers, none lost or "
                     "duplicated, either lists all",
                     f"{w['accepted']['create']} creates + {w['accepted']['run']} runs accepted in "
                     f"{w['elapsed_s']} s ({w['writes_per_s']}/s), {w['refused']} refused; {listed}",
                     _verdict(w["pass"])])
    if "schedule" in parts:
        s = parts["schedule"]
        rows.append(["schedule", f"every {s['interval_s']} s for {s['window_s']:g} s, a server "
                     "SIGKILLed midway: each fire exactly once (scheduler lease "
                     f"{s['scheduler_ttl_s']}{'' if s['scheduler_ttl_s'] == 'default' else ' s'})",
                     f"{s['fired']} of {s['expected_fires']} fires, {len(s['missed'])} missed, "
                     f"{len(s['repeated'])} repeated; a run created {s['fire_late_s']['p50']} s "
                     f"after its due time (p50), {s['fire_late_s']['max']} s at most (the "
                     f"takeover); killed {s['killed']} "
                     f"({'the lease holder' if s['killed_was_lease_holder'] else 'not known to hold the lease'}) "
                     f"at {s['killed_after_s']} s", _verdict(s["pass"])])
    if "failover" in parts:
        f = parts["failover"]
        rows.append(["failover", "a server SIGKILLed while its runs run: the other serves; "
                     "restarted, it adopts its runs",
                     f"survivor: {f['survivor_requests']} requests, {f['survivor_errors']} errors, "
                     f"p50 {f['survivor_p50_ms']} ms; runs while down "
                     f"{sorted(set(f['states_while_down'].values()))}; after restart "
                     f"({f['restart_s']} s) {sorted(set(f['final_states'].values()))}",
                     _verdict(f["pass"])])
    if "latency" in parts:
        lat = parts["latency"]
        n = lat["instances"]
        for case, label in (("get", "GET by id, in-process"), ("list", "filtered listing, in-process"),
                            ("http_get", "GET by id, HTTP"), ("http_list", "filtered listing, HTTP")):
            c = lat["compare"][case]
            measured = f"SQLite p50 {c['sqlite_p50_ms']} / p99 {c['sqlite_p99_ms']} ms"
            verdict = "n/a"
            if "pg_p50_ms" in c:
                measured += (f"; PostgreSQL p50 {c['pg_p50_ms']} / p99 {c['pg_p99_ms']} ms "
                             f"({c['ratio_p50']}x / {c['ratio_p99']}x)")
                verdict = _verdict(c["within_2x"])
            rows.append([f"{case} @{n:,}", f"PostgreSQL within {GOAL_PG_RATIO:g}x of SQLite",
                         measured, verdict])
            if case in ("list", "http_list"):
                for store in ("sqlite", "postgresql"):
                    if store in lat["stores"]:
                        p50 = lat["stores"][store][case]["p50_ms"]
                        rows.append([f"{case} @{n:,}", f"{store} listing p50 <= "
                                     f"{GOAL_LIST_P50_MS:g} ms", f"p50 {p50} ms",
                                     _verdict(p50 <= GOAL_LIST_P50_MS)])
        seeded = {k: v["seed"]["seed_per_s"] for k, v in lat["stores"].items()}
        rows.append([f"seeding @{n:,}", "(through Registry.create, 10,000 per transaction)",
                     ", ".join(f"{k} {v:,} MLInstances/s" for k, v in seeded.items()), ""])
        before = lat["stores"].get("postgresql", {}).get("as_seeded")
        if before:
            rows.append([f"as seeded @{n:,}", "(PostgreSQL before VACUUM ANALYZE, in-process)",
                         f"get p50 {before['get']['p50_ms']} / p99 {before['get']['p99_ms']} ms; "
                         f"list p50 {before['list']['p50_ms']} / p99 {before['list']['p99_ms']} ms",
                         ""])
        if lat["postgresql"] != "measured":
            rows.append(["latency", "PostgreSQL beside SQLite", lat["postgresql"], "n/a"])
    return rows


def _verdict(passed: Optional[bool]) -> str:
    return "n/a" if passed is None else "PASS" if passed else "FAIL"


def _environment() -> dict[str, Any]:
    import sqlite3

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=REPO).stdout.strip()
    pg_version = None
    try:
        pg = pg_cluster_module()
        initdb = pg._bin("initdb")
        if initdb:
            pg_version = subprocess.run([initdb, "--version"], capture_output=True,
                                        text=True).stdout.strip()
    except Exception:   # only a label in the results
        pass
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "sqlite": sqlite3.sqlite_version,
            "postgresql": pg_version, "git_commit": commit, "load_avg_at_start": os.getloadavg()}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="small numbers (40 writes, a 5 s schedule for 15 s, 2,000 "
                             "MLInstances): a smoke test, not a measurement")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated, of {', '.join(PARTS)} (default: all)")
    parser.add_argument("--team-store", choices=("auto", "postgresql", "sqlite"), default="auto",
                        help="the registry the two servers share (auto: PostgreSQL when this "
                             "runtime opens one, else SQLite, saying so)")
    parser.add_argument("--writes", type=int, help="concurrent writes (default 1000)")
    parser.add_argument("--instances", type=int, help="MLInstances of the latency part "
                                                      "(default 100000)")
    parser.add_argument("--window", type=float, help="seconds the schedule fires (default 120)")
    parser.add_argument("--interval", type=int, help="the schedule's period, s (default 10)")
    parser.add_argument("--scheduler-ttl-s", type=float,
                        help="the servers' scheduler lease (MLRUNTIME_SCHEDULER_TTL_S; default: "
                             "the runtime's own, 15 s; --quick: 2 s)")
    parser.add_argument("--pg-url", metavar="URL",
                        help="a PostgreSQL server to use instead of starting one "
                             "(postgresql://USER@HOST:PORT/postgres; USER needs CREATEDB)")
    parser.add_argument("--out", metavar="FILE",
                        help="write the results here (default: benchmarks/results/team-TIME.json)")
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    parser.add_argument("--seed", type=int, default=1234)
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    sizes = Sizes.quick() if args.quick else Sizes()
    for name, value in (("writes", args.writes), ("instances", args.instances),
                        ("window_s", args.window), ("interval_s", args.interval),
                        ("scheduler_ttl_s", args.scheduler_ttl_s)):
        if value is not None:
            setattr(sizes, name, value)
    if 60 % sizes.interval_s:
        parser.error("--interval must divide 60 (a cron seconds field)")

    env = _environment()
    print(f"team benchmark: parts {', '.join(parts)}, {env['cpus']} CPUs, Python {env['python']}, "
          f"SQLite {env['sqlite']}, {env['postgresql'] or 'no PostgreSQL'}")
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="bench-team-"))
    stores = Stores(scratch, args.pg_url)
    result: dict[str, Any] = {"benchmark": "team", "args": vars(args), "sizes": vars(sizes),
                              "environment": env, "parts": {}}
    team: Optional[Team] = None
    try:
        team_parts = [p for p in parts if p != "latency"]
        if team_parts:
            kind = args.team_store
            if kind == "auto":
                kind = "postgresql" if stores.postgres() is not None else "sqlite"
            if kind == "postgresql" and stores.postgres() is None:
                raise SystemExit(f"--team-store postgresql: {stores.pg_missing}")
            result["team_store"] = kind
            if kind == "sqlite" and args.team_store == "auto":
                print(f"note: the two servers share a SQLite file; PostgreSQL: {stores.pg_missing}")
            url = stores.url(kind, "team")
            team = Team(url, scratch / "team", scheduler_ttl_s=sizes.scheduler_ttl_s)
            team.start_all()
            data = scratch / "data.csv"
            for part in team_parts:
                t0 = time.perf_counter()
                if part == "writes":
                    result["parts"][part] = part_writes(team, sizes, data)
                elif part == "schedule":
                    result["parts"][part] = part_schedule(team, sizes, data, url)
                elif part == "failover":
                    result["parts"][part] = part_failover(team, sizes, data)
                result["parts"][part]["part_s"] = round(time.perf_counter() - t0, 1)
                print(f"  {part}: {'ok' if result['parts'][part]['pass'] else 'FAILED'} "
                      f"({result['parts'][part]['part_s']} s)", flush=True)
            team.stop()
            team = None
            if kind == "postgresql" and "writes" in team_parts and not args.quick:
                # The baseline: the same writes, two servers on one SQLite file.
                team = Team(stores.url("sqlite", "team"), scratch / "team-sqlite")
                team.start_all()
                t0 = time.perf_counter()
                result["parts"]["writes_sqlite"] = part_writes(team, sizes, data)
                result["parts"]["writes_sqlite"]["part_s"] = round(time.perf_counter() - t0, 1)
                print(f"  writes on SQLite (baseline): "
                      f"{'ok' if result['parts']['writes_sqlite']['pass'] else 'FAILED'}", flush=True)
                team.stop()
                team = None
        if "latency" in parts:
            t0 = time.perf_counter()
            result["parts"]["latency"] = part_latency(stores, sizes, args.seed)
            print(f"  latency: measured ({time.perf_counter() - t0:.0f} s)", flush=True)
    except Exception:
        if team is not None:
            print(team.logs(), file=sys.stderr)
        raise
    finally:
        if team is not None:
            team.stop()
        stores.close()
        if args.keep:
            print(f"(scratch kept at {scratch})")
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    print(f"\nTeam server ({result.get('team_store', '-')} registry shared by two servers)")
    print(table(["part", "goal", "measured", "verdict"], report(result)))
    problems = [f"{name}: {p}" for name, part in result["parts"].items()
                for p in part.get("problems", [])]
    for p in problems:
        print(f"FAIL {p}")
    elapsed = time.perf_counter() - started
    result["elapsed_s"] = round(elapsed, 1)
    result["correct"] = not problems
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = Path(args.out) if args.out else RESULTS_DIR / f"team-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))
    print(f"\n{elapsed:.0f} s; results in {path}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
