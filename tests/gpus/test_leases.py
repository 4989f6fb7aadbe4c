"""GPU leases end to end: CLI runs on a host whose nvidia-smi is fake. Two runs never share a
whole GPU; fractions share one; a lease outlives a killed holder until its worker's whole process
group is gone; `run gpus` shows who holds what."""
from __future__ import annotations

import json
import os
import signal
import uuid
from typing import Optional

from runtime.home import resolve_home
from runtime.registry import Registry

from gpu_helpers import probe, probe_instance, run_cli, running, start_run
from waiting import until


def registry_of(env) -> Registry:
    return Registry.open(resolve_home(env["MLRUNTIME_HOME"]))


def wait_queued(env, timeout_s: float = 60.0) -> tuple[str, str]:
    """The run waiting in the queue and its status message, once it says what it waits for."""
    from runtime.store import Scope

    def queued() -> Optional[tuple[str, str]]:
        for row in registry.store.ledger_rows():
            if row["phase"] == "queued":
                status = registry.store.get_run_status(Scope(row["org"], row["sandbox"]),
                                                       row["run_id"])
                message = status["status"]["tasks"][0].get("message") or ""
                if "waiting for" in message:
                    return row["run_id"], message
        return None

    registry = registry_of(env)
    try:
        return until(queued, timeout_s=timeout_s, what="a run waiting in the queue")
    finally:
        registry.close()


def gpu_granted_now(env) -> bool:
    """Whether this home's run queue grants the whole GPU, at this moment, to a run that asks for
    it: one pass of a new queue (runtime.supervisor's, with no liveness judgement cached yet) over
    the home's ledger, from this process. The asking run's row is removed again."""
    from runtime.capacity import Capacity, Demand
    from runtime.registry import Caller
    from runtime.supervisor import Supervisor

    registry = registry_of(env)
    queue = Supervisor(registry, Capacity(cpus=64, gpus=(0,)), kind="cli")   # only the GPU counts
    run_id = f"asking-{uuid.uuid4().hex[:8]}"
    try:
        queue.own(Caller.local().scope, run_id, phase="queued", demand=Demand(cpus=1, gpus=1.0))
        queue.close()        # no pass in the background: the one below decides
        queue.dispatch_once()
        return registry.store.ledger_get(run_id)["phase"] == "running"
    finally:
        queue.close()
        registry.store.ledger_delete([run_id])
        registry.close()


def run_doc(env, run_id: str) -> dict:
    from runtime.schemas import EXPERIMENT_RUN
    from runtime.registry import Caller

    registry = registry_of(env)
    try:
        return registry.get(EXPERIMENT_RUN, Caller.local(), run_id)
    finally:
        registry.close()


def finish(proc, timeout: float = 90.0) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert out.strip(), err
    return json.loads(out.strip().splitlines()[-1])


def gpus_now(env) -> list[dict]:
    result = run_cli(env, "gpus", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_two_runs_never_share_a_whole_gpu_and_the_run_records_it(gpu_env, tmp_path):
    target = probe_instance(tmp_path)
    first = start_run(gpu_env, target, tmp_path / "p1", "-p", "hold_ms=10000", "--device", "cuda")
    seen_first = probe(tmp_path / "p1")
    second = start_run(gpu_env, target, tmp_path / "p2", "--device", "cuda")
    waiting_id, message = wait_queued(gpu_env)
    assert "1 GPU(s); free: none" in message, message
    assert not list((tmp_path / "p2").glob("*.json"))   # no worker while the GPU is taken
    table = gpus_now(gpu_env)
    assert [(r["index"], r["name"], r["memoryUsedMB"], r["memoryTotalMB"]) for r in table] == [
        (0, "NVIDIA H100 80GB HBM3", 1234, 81559)]
    assert len(table[0]["holders"]) == 1 and table[0]["leased"] == 1.0
    assert table[0]["holders"][0]["runId"] != waiting_id

    one, two = finish(first), finish(second)
    assert one["state"] == two["state"] == "DONE", (one, two)
    seen_first = probe(tmp_path / "p1")
    seen_second = probe(tmp_path / "p2")
    assert seen_second["start"] >= seen_first["end"]   # one after the other, never together
    for seen in (seen_first, seen_second):
        assert seen["CUDA_VISIBLE_DEVICES"] == "0" and seen["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
        assert seen["device"] == "cuda:0"
    devices = run_doc(gpu_env, one["runId"])["devices"]
    assert devices == [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memoryMB": 81559,
                        "share": 1.0, "workerDevice": "cuda:0"}]
    assert gpus_now(gpu_env)[0]["holders"] == []


def test_two_gpus_two_runs_each_gets_its_own_physical_device(gpu_env, tmp_path):
    gpu_env["FAKE_GPUS"] = "2"
    target = probe_instance(tmp_path)
    procs = [start_run(gpu_env, target, tmp_path / f"p{i}", "-p", "hold_ms=3000",
                       "--device", "cuda") for i in range(2)]
    seen = [probe(tmp_path / f"p{i}") for i in range(2)]
    summaries = [finish(p) for p in procs]
    assert all(s["state"] == "DONE" for s in summaries), summaries
    seen = [probe(tmp_path / f"p{i}") for i in range(2)]
    assert sorted(s["CUDA_VISIBLE_DEVICES"] for s in seen) == ["0", "1"]
    assert max(s["start"] for s in seen) < min(s["end"] for s in seen)   # they overlapped
    names = {d["index"]: d["name"] for s in summaries
             for d in run_doc(gpu_env, s["runId"])["devices"]}
    assert names == {0: "NVIDIA H100 80GB HBM3", 1: "NVIDIA A10"}


def test_fractional_requests_share_one_gpu(gpu_env, tmp_path):
    target = probe_instance(tmp_path, gpus="0.5", name="half")
    procs = [start_run(gpu_env, target, tmp_path / f"p{i}", "-p", "hold_ms=5000")
             for i in range(2)]
    seen = [probe(tmp_path / f"p{i}") for i in range(2)]
    table = gpus_now(gpu_env)
    assert table[0]["leased"] == 1.0 and sorted(h["share"] for h in table[0]["holders"]) == [0.5, 0.5]
    summaries = [finish(p) for p in procs]
    assert all(s["state"] == "DONE" for s in summaries), summaries
    seen = [probe(tmp_path / f"p{i}") for i in range(2)]
    assert max(s["start"] for s in seen) < min(s["end"] for s in seen)
    assert all(s["CUDA_VISIBLE_DEVICES"] == "0" for s in seen)
    assert run_doc(gpu_env, summaries[0]["runId"])["devices"][0]["share"] == 0.5


def test_a_killed_holders_lease_is_kept_until_its_whole_group_is_gone(gpu_env, tmp_path):
    """SIGKILL the CLI that holds the GPU: its worker still runs, the lease stays. SIGKILL the
    worker: a child it left in its group still runs, the lease stays. SIGKILL the group: the
    waiting run gets the GPU. Each "stays" is the queue's own decision, asked for at that moment
    (no cached judgement, no waiting for one to expire); the asking is shown able to say yes."""
    target = probe_instance(tmp_path)
    assert gpu_granted_now(gpu_env), "a free GPU must be granted (or the refusals below prove nothing)"
    holder = start_run(gpu_env, target, tmp_path / "p1", "-p", "hold_ms=120000",
                       "-p", "child_ms=120000", "--device", "cuda")
    seen = probe(tmp_path / "p1")
    waiter = None
    try:
        assert not gpu_granted_now(gpu_env), "the GPU was granted twice"
        holder.kill()
        holder.wait()
        assert not gpu_granted_now(gpu_env), "the lease went with its CLI process"
        os.kill(seen["pid"], signal.SIGKILL)   # the worker; its child lives on in the group
        until(lambda: not running(seen["pid"]), timeout_s=10, what="the killed worker to be gone")
        assert running(seen["child"])
        assert not gpu_granted_now(gpu_env), "the lease went with the worker alone"
        holders = gpus_now(gpu_env)[0]["holders"]
        assert len(holders) == 1 and holders[0]["workerPid"] == seen["pid"]

        waiter = start_run(gpu_env, target, tmp_path / "p2", "--device", "cuda")
        wait_queued(gpu_env)
        os.killpg(seen["pgid"], signal.SIGKILL)
        summary = finish(waiter)   # the waiting run's queue sees the group gone and grants it
        assert summary["state"] == "DONE", summary
        assert probe(tmp_path / "p2")["CUDA_VISIBLE_DEVICES"] == "0"
    finally:
        try:
            os.killpg(seen["pgid"], signal.SIGKILL)
        except OSError:
            pass
        for proc in (holder, waiter):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.communicate()
