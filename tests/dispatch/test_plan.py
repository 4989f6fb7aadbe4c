"""The dispatcher's decisions, on fake hosts: backend, device, threads, environment, refusals."""
from __future__ import annotations

import json

import pytest

from runtime.dispatch import THREAD_ENV_VARS, CudaDevice, HostInfo, Plan, describe, plan
from runtime.errors import ConfigError
from runtime.resources import ResourceRequest


def host(gpus: int = 0, cpus: int = 8) -> HostInfo:
    return HostInfo(cpu_count=cpus, cuda_devices=tuple(
        CudaDevice(index=i, name=f"NVIDIA H100 #{i}", memory_mb=81_559) for i in range(gpus)))


def python_plan(resources: ResourceRequest | None = None, *, gpus: int = 0, cpus: int = 8, **kwargs) -> Plan:
    return plan(engine_kind="python", resources=resources or ResourceRequest(), host=host(gpus, cpus), **kwargs)


# --- CPU ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("gpus_on_host", [0, 1, 2])
def test_no_gpu_request_runs_on_cpu_with_gpus_hidden(gpus_on_host):
    p = python_plan(gpus=gpus_on_host)
    assert (p.backend, p.device, p.gpu_indices) == ("python-cpu", "cpu", ())
    assert p.env["CUDA_VISIBLE_DEVICES"] == ""  # a CPU run can never grab a GPU


def test_zero_gpus_requested_is_a_cpu_run():
    p = python_plan(ResourceRequest(gpus=0), gpus=2)
    assert p.backend == "python-cpu" and p.env["CUDA_VISIBLE_DEVICES"] == ""


# --- threads -----------------------------------------------------------------------------------

def test_threads_default_to_all_host_cores():
    p = python_plan(cpus=12)
    assert p.threads == 12 and "all host cores" in p.reason


def test_threads_follow_requested_cpus():
    p = python_plan(ResourceRequest(cpus=3), cpus=12)
    assert p.threads == 3


def test_threads_are_capped_at_host_cores():
    p = python_plan(ResourceRequest(cpus=64), cpus=4)
    assert p.threads == 4 and "capped" in p.reason and "64" in p.reason


def test_env_sets_every_thread_pool():
    p = python_plan(ResourceRequest(cpus=3))
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TORCH_NUM_THREADS"):
        assert p.env[name] == "3"
    assert set(p.env) == {*THREAD_ENV_VARS, "CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"}


# --- CUDA --------------------------------------------------------------------------------------

@pytest.mark.parametrize("gpus_on_host", [1, 2])
def test_one_gpu_requested_takes_the_first_device(gpus_on_host):
    p = python_plan(ResourceRequest(gpus=1), gpus=gpus_on_host)
    assert (p.backend, p.device, p.gpu_indices) == ("python-cuda", "cuda:0", (0,))
    assert p.env["CUDA_VISIBLE_DEVICES"] == "0"
    assert f"host has {gpus_on_host} CUDA device" in p.reason and "python-cuda on cuda:0 (GPU 0)" in p.reason


def test_two_gpus_requested_on_a_two_gpu_host():
    p = python_plan(ResourceRequest(gpus=2), gpus=2)
    assert (p.backend, p.device, p.gpu_indices) == ("python-cuda", "cuda", (0, 1))
    assert p.env["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_device_cuda_without_resources_means_one_gpu():
    p = python_plan(gpus=2, device="cuda")
    assert p.gpu_indices == (0,) and p.device == "cuda:0"


def test_pinned_device_is_the_workers_cuda0():
    p = python_plan(gpus=2, device="cuda:1")
    assert (p.backend, p.device, p.gpu_indices) == ("python-cuda", "cuda:0", (1,))
    assert p.env["CUDA_VISIBLE_DEVICES"] == "1"
    assert "cuda:0 (GPU 1)" in p.reason


def test_visible_id_from_an_outer_mask_is_passed_on():
    outer = HostInfo(cpu_count=4, cuda_devices=(CudaDevice(index=0, name="A", memory_mb=1, visible_id="3"),))
    p = plan(engine_kind="python", resources=ResourceRequest(gpus=1), host=outer)
    assert p.gpu_indices == (0,) and p.env["CUDA_VISIBLE_DEVICES"] == "3"


def test_gpu_request_without_cuda_is_a_clear_error():
    with pytest.raises(ConfigError) as info:
        python_plan(ResourceRequest(gpus=1), gpus=0)
    message = str(info.value)
    assert "requests 1 GPU" in message and "this host has no CUDA device" in message
    assert "pass --device cpu to run on the CPU" in message


def test_more_gpus_than_the_host_has():
    with pytest.raises(ConfigError, match="requests 2 GPUs .* has only 1 CUDA device"):
        python_plan(ResourceRequest(gpus=2), gpus=1)


@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_device_cuda_on_a_host_without_cuda(device):
    with pytest.raises(ConfigError, match="no CUDA device; pass --device cpu"):
        python_plan(gpus=0, device=device)


def test_pinned_device_that_does_not_exist():
    with pytest.raises(ConfigError, match="cuda:2 .* has only cuda:0, cuda:1"):
        python_plan(gpus=2, device="cuda:2")


def test_pinning_one_device_for_a_two_gpu_request():
    with pytest.raises(ConfigError, match="pins one GPU"):
        python_plan(ResourceRequest(gpus=2), gpus=2, device="cuda:0")


@pytest.mark.parametrize("gpus_on_host", [0, 2])
def test_device_cpu_overrides_a_gpu_request(gpus_on_host):
    p = python_plan(ResourceRequest(gpus=1), gpus=gpus_on_host, device="cpu")
    assert (p.backend, p.device, p.gpu_indices) == ("python-cpu", "cpu", ())
    assert p.env["CUDA_VISIBLE_DEVICES"] == "" and "--device cpu" in p.reason


def test_unknown_device():
    with pytest.raises(ConfigError, match="Unknown device 'tpu'"):
        python_plan(device="tpu")


# --- other backends ----------------------------------------------------------------------------

def test_pyspark_engine_plans_the_pyspark_backend():
    p = plan(engine_kind="pyspark", resources=ResourceRequest(cpus=2), host=host(gpus=1))
    assert (p.backend, p.device, p.threads) == ("pyspark", "cpu", 2)
    assert p.env["CUDA_VISIBLE_DEVICES"] == ""


def test_pyspark_refuses_gpus():
    with pytest.raises(ConfigError, match="pyspark backend schedules no GPUs"):
        plan(engine_kind="pyspark", resources=ResourceRequest(gpus=1), host=host(gpus=1))


def test_explicit_backend_is_kept():
    p = python_plan(ResourceRequest(gpus=1), gpus=1, backend="ray")
    assert (p.backend, p.device, p.gpu_indices) == ("ray", "cuda", ())   # the cluster places it
    assert "backend ray requested" in p.reason


def test_python_cpu_backend_with_a_gpu_request_is_refused():
    with pytest.raises(ConfigError, match="python-cpu runs on the CPU"):
        python_plan(ResourceRequest(gpus=1), gpus=1, backend="python-cpu")


def test_python_cuda_backend_means_one_gpu():
    p = python_plan(gpus=1, backend="python-cuda")
    assert p.gpu_indices == (0,) and p.device == "cuda:0"


def test_unknown_engine_kind():
    with pytest.raises(ConfigError, match="engine kind"):
        plan(engine_kind="java", resources=ResourceRequest(), host=host())


# --- output ------------------------------------------------------------------------------------

def test_to_record_is_json():
    p = python_plan(ResourceRequest(gpus=1, cpus=2), gpus=2)
    record = json.loads(json.dumps(p.to_record()))
    assert record["backend"] == "python-cuda" and record["gpu_indices"] == [0]
    assert Plan.model_validate(record) == p


def test_describe_shows_every_decision():
    text = describe(python_plan(ResourceRequest(gpus=1, cpus=2), gpus=2))
    for expected in ("python-cuda", "cuda:0", "threads  2", "CUDA_VISIBLE_DEVICES=0", "reason"):
        assert expected in text
    assert "CUDA_VISIBLE_DEVICES=''" in describe(python_plan())


def test_reason_is_one_sentence():
    reason = python_plan(ResourceRequest(gpus=1), gpus=2).reason
    assert reason.startswith("python engine, 1 GPU requested") and "\n" not in reason


def test_a_cluster_backend_places_gpu_tasks_itself():
    """A Ray cluster's GPUs and cores are not this host's: no local refusal, no core cap."""
    p = plan(engine_kind="python", resources=ResourceRequest(gpus=1, cpus=16), host=host(gpus=0, cpus=2),
             backend="ray")
    assert (p.backend, p.device, p.threads, p.gpu_indices) == ("ray", "cuda", 16, ())
    assert "CUDA_VISIBLE_DEVICES" not in p.env
    assert p.resources == ResourceRequest(gpus=1, cpus=16)
    with pytest.raises(ConfigError):   # the same request on this host alone is refused
        plan(engine_kind="python", resources=ResourceRequest(gpus=1), host=host(gpus=0))
