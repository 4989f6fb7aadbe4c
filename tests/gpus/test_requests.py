"""GPU requests: shares below one, whole numbers above, PCI bus order, refusal without CUDA."""
from __future__ import annotations

import pytest

from runtime.capacity import Capacity, demand_for
from runtime.dispatch import CudaDevice, HostInfo, plan
from runtime.errors import ConfigError
from runtime.resources import ResourceRequest

HOST = HostInfo(cpu_count=8, cuda_devices=(CudaDevice(index=0, name="A", memory_mb=1),
                                            CudaDevice(index=1, name="B", memory_mb=1)))
CAP = Capacity(cpus=8, gpus=(0, 1))


def test_a_share_of_one_gpu_is_planned_on_one_device_and_leased_as_a_share():
    p = plan(engine_kind="python", resources=ResourceRequest(gpus=0.5), host=HOST)
    assert p.gpu_indices == (0,) and p.gpus == 0.5 and p.device == "cuda:0"
    assert p.env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID" and p.env["CUDA_VISIBLE_DEVICES"] == "0"
    assert demand_for(ResourceRequest(gpus=0.5), p, CAP).gpus == 0.5
    pinned = plan(engine_kind="python", resources=ResourceRequest(gpus=0.5), host=HOST,
                  device="cuda:1")
    demand = demand_for(ResourceRequest(gpus=0.5), pinned, CAP, "cuda:1")
    assert (demand.gpus, demand.gpu_pinned) == (0.5, 1)
    assert "share" in p.reason


def test_whole_requests_stay_whole_and_odd_fractions_are_refused():
    assert ResourceRequest(gpus=2.0).gpus == 2 and isinstance(ResourceRequest(gpus=2.0).gpus, int)
    with pytest.raises(ValueError, match="whole number"):
        ResourceRequest(gpus=1.5)
    p = plan(engine_kind="python", resources=ResourceRequest(gpus=2), host=HOST)
    assert p.gpu_indices == (0, 1) and demand_for(ResourceRequest(gpus=2), p, CAP).gpus == 2


def test_without_cuda_a_gpu_request_is_refused_unless_device_cpu():
    bare = HostInfo(cpu_count=2)
    with pytest.raises(ConfigError, match="pass --device cpu"):
        plan(engine_kind="python", resources=ResourceRequest(gpus=0.5), host=bare)
    assert plan(engine_kind="python", resources=ResourceRequest(gpus=0.5), host=bare,
                device="cpu").device == "cpu"



def test_the_resolver_reads_shares_from_a_container_spec_and_parameters():
    from runtime.resolver import Layer, resolve

    spec = [{"name": "train", "specification": {"type": "ContainerTaskSpec", "gpus": 0.5}}]
    assert resolve("train", None, [Layer("mlInstance", tasks=spec)],
                   accepts_extra_keys=True).resources.gpus == 0.5
    params = [{"name": "train", "parameters": [{"key": "gpus", "value": "2.0"}]}]
    assert resolve("train", None, [Layer("mlInstance", tasks=params)],
                   accepts_extra_keys=True).resources.gpus == 2
    bad = [{"name": "train", "parameters": [{"key": "gpus", "value": "1.5"}]}]
    with pytest.raises(ConfigError, match="share below 1"):
        resolve("train", None, [Layer("mlInstance", tasks=bad)], accepts_extra_keys=True)
