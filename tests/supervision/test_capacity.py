"""The queue's admission rule and GPU leases, on fake hosts (no GPU needed)."""
from __future__ import annotations

import threading

import pytest

from runtime.capacity import (DEFAULT_RUN_CPUS, Capacity, Demand, Grant, NeverFits, QueueEntry,
                              admit, check_fits, try_grant, Usage)

pytestmark = pytest.mark.stores   # each test on SQLite and on PostgreSQL


def entries(*demands: Demand) -> list[QueueEntry]:
    return [QueueEntry(f"r{i}", i, d) for i, d in enumerate(demands)]


def test_two_small_runs_share_a_two_core_host_and_a_third_waits():
    host = Capacity(cpus=2)
    small = Demand()                      # asks nothing: DEFAULT_RUN_CPUS
    assert DEFAULT_RUN_CPUS == 1
    granted, waiting = admit(entries(small, small, small), [], host)
    assert set(granted) == {"r0", "r1"}
    assert waiting["r2"].startswith("Queued: position 1 of 1") and "CPU slot" in waiting["r2"]


def test_fifo_a_later_smaller_run_never_overtakes_the_head():
    host = Capacity(cpus=2)
    granted, waiting = admit(entries(Demand(cpus=2), Demand(cpus=1)), [Grant(cpus=1)], host)
    assert granted == {} and set(waiting) == {"r0", "r1"}
    assert "position 2 of 2" in waiting["r1"]


def test_max_concurrent_runs_caps_the_queue():
    granted, waiting = admit(entries(Demand(cpus=0.1), Demand(cpus=0.1)), [],
                             Capacity(cpus=8, max_runs=1))
    assert list(granted) == ["r0"] and "at most 1 concurrent" in waiting["r1"]


def test_gpus_are_leased_by_index_one_run_per_gpu_unless_a_fraction_is_asked():
    host = Capacity(cpus=16, gpus=(0, 1))
    granted, waiting = admit(entries(Demand(gpus=1), Demand(gpus=1), Demand(gpus=1)), [], host)
    assert granted["r0"].gpu_indices == (0,) and granted["r1"].gpu_indices == (1,)
    assert "GPU" in waiting["r2"]
    # fractions pack onto one device before taking another
    granted, _ = admit(entries(Demand(gpus=0.5), Demand(gpus=0.5), Demand(gpus=0.5)), [], host)
    assert [granted[r].gpu_indices for r in ("r0", "r1", "r2")] == [(0,), (0,), (1,)]
    # a pinned run waits for its own device even when another is free
    grant, why = try_grant(Demand(gpus=1, gpu_pinned=0), Usage.of([Grant(0, {0: 1.0})]), host)
    assert grant is None and "free: 1" in why


def test_a_run_that_can_never_fit_is_refused_with_the_reason():
    host = Capacity(cpus=2, gpus=(0,), memory_mb=1000)
    with pytest.raises(NeverFits, match="8 GPU"):
        check_fits(Demand(gpus=8), host)
    with pytest.raises(NeverFits, match="memory"):
        check_fits(Demand(memory_mb=5000), host)
    with pytest.raises(NeverFits, match="cuda:3"):
        check_fits(Demand(gpus=1, gpu_pinned=3), host)
    assert NeverFits("x").status == 400
    check_fits(Demand(gpus=1, memory_mb=1000), host)


def test_two_processes_never_take_the_same_gpu(registry, caller):
    """Two supervisors over one registry (as a CLI and a server are) lease distinct devices."""
    from runtime.supervisor import Supervisor

    host = Capacity(cpus=8, gpus=(0, 1))
    runs = [registry.create_run(caller, _experiment(registry, caller), {"mode": "train"})
            for _ in range(3)]
    cli, server = Supervisor(registry, host, kind="cli"), Supervisor(registry, host, kind="server")
    grants: dict[str, Grant] = {}

    def take(sup, run):
        control = sup.own(caller.scope, run["id"])
        grants[run["id"]] = sup.acquire(control, Demand(gpus=1), lambda message: None)

    threads = [threading.Thread(target=take, args=(sup, run))
               for sup, run in zip((cli, server), runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(g.gpu_indices for g in grants.values()) == [(0,), (1,)]
    # the third waits until one ends, then gets the freed device
    third = cli.own(caller.scope, runs[2]["id"])
    waiter = threading.Thread(target=take, args=(cli, runs[2]))
    waiter.start()
    waiter.join(0.5)
    assert waiter.is_alive()
    from runtime.schemas import RunStatus

    freed = next(r for r, g in grants.items() if g.gpu_indices == (1,))
    registry.transition_run(caller.scope, freed, RunStatus.ABORTED, message="test")
    server.release(freed)
    waiter.join(10)
    assert grants[runs[2]["id"]].gpu_indices == (1,) and third.granted.is_set()
    cli.close()
    server.close()


def _experiment(registry, caller) -> str:
    from runtime.schemas import ENGINE, EXPERIMENT, MLINSTANCE

    engine = registry.create(ENGINE, caller, {"name": "noop", "artifacts": {"default": {
        "image": {"location": "noop"}}}})
    instance = registry.create(MLINSTANCE, caller, {"name": "i", "engineId": engine["id"]})
    return registry.create(EXPERIMENT, caller, {"name": "e", "mlInstanceId": instance["id"]})["id"]


def test_the_plan_takes_the_leased_gpu_not_the_first_one():
    """On a fake 2-GPU host, a run leased GPU 1 sees CUDA_VISIBLE_DEVICES=1, not the planner's 0."""
    from runtime.dispatch import CudaDevice, HostInfo, plan
    from runtime.resources import ResourceRequest
    from runtime.runs.attempt import plan_for_grant

    host = HostInfo(cpu_count=4, cuda_devices=(CudaDevice(index=0, name="fake", memory_mb=1),
                                               CudaDevice(index=1, name="fake", memory_mb=1)))
    planned = plan(engine_kind="python", resources=ResourceRequest(gpus=1), host=host)
    assert planned.gpu_indices == (0,)
    leased = plan_for_grant(planned, Grant(cpus=1, gpus={1: 1.0}), host)
    assert leased.gpu_indices == (1,) and leased.env["CUDA_VISIBLE_DEVICES"] == "1"
    assert leased.device == planned.device == "cuda:0" and "leased GPU 1" in leased.reason
    assert plan_for_grant(planned, Grant(cpus=1, gpus={0: 1.0}), host) is planned
