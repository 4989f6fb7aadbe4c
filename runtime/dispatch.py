"""The dispatcher: decides where and how a task runs (backend, device, threads, environment).

`plan` is pure: the host is passed in as data, so every decision is testable with a fake host.
Only `detect_host` looks at the machine, and it never imports torch (that alone costs about 1 s).
"""
from __future__ import annotations

import os
import re
from pydantic import BaseModel, ConfigDict, Field

from .errors import ConfigError
from .gpus import query_devices
from .plans import Plan
from .resources import ResourceRequest

__all__ = ["CudaDevice", "HostInfo", "Plan", "THREAD_ENV_VARS", "describe", "detect_host", "plan"]

# The backends a task gets when none is asked for, by its engine kind (and, for python, whether
# it wants a GPU). What any backend is and does, the backend declares (runtime.backends.Backend).
PYTHON_CPU = "python-cpu"
PYTHON_CUDA = "python-cuda"
PYSPARK = "pyspark"

# Every thread pool a python engine is likely to start reads one of these at import time.
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                   "NUMEXPR_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "TORCH_NUM_THREADS")

_CUDA_DEVICE = re.compile(r"cuda(?::(\d+))?")


class CudaDevice(BaseModel):
    """One CUDA device as this process would number it (`index`, as in `cuda:<index>`).

    `visible_id` is what a child's CUDA_VISIBLE_DEVICES must name to get this device: the entry of
    our own CUDA_VISIBLE_DEVICES when one is set (CUDA numbers it relative to the physical list),
    else the physical index.
    """

    model_config = ConfigDict(frozen=True)

    index: int = Field(ge=0)
    name: str
    memory_mb: int = Field(ge=0)
    visible_id: str | None = None

    @property
    def cuda_visible_id(self) -> str:
        return self.visible_id if self.visible_id is not None else str(self.index)


class HostInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    cpu_count: int = Field(ge=1)
    cuda_devices: tuple[CudaDevice, ...] = ()


# --- the host ---------------------------------------------------------------------------------

def detect_host() -> HostInfo:
    """This machine's usable cores (CPU affinity first) and the CUDA devices nvidia-smi reports,
    filtered and renumbered by an existing CUDA_VISIBLE_DEVICES. No nvidia-smi, no CUDA."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    return HostInfo(cpu_count=max(1, cpus), cuda_devices=_visible(_nvidia_smi_devices()))


def _nvidia_smi_devices() -> list[tuple[int, str, str, int]]:
    """(physical index, uuid, name, memory_mb) per device nvidia-smi reports (runtime.gpus reads
    it); a device whose memory it cannot tell is not one we can use."""
    return [(d["index"], d["uuid"], d["name"], d["memoryTotalMB"])
            for d in query_devices(memory_used=False) if d["memoryTotalMB"] is not None]


def _visible(physical: list[tuple[int, str, str, int]]) -> tuple[CudaDevice, ...]:
    mask = os.environ.get("CUDA_VISIBLE_DEVICES")
    if mask is None:
        return tuple(CudaDevice(index=i, name=n, memory_mb=m) for i, _, n, m in physical)
    by_index = {str(d[0]): d for d in physical}
    chosen: list[CudaDevice] = []
    for entry in (e.strip() for e in mask.split(",")):
        if not entry:
            continue
        # CUDA stops at the first entry it cannot match (e.g. "-1"), so do we
        device = by_index.get(entry) or next((d for d in physical if d[1].startswith(entry)
                                               and entry.startswith(("GPU-", "MIG-"))), None)
        if device is None:
            break
        chosen.append(CudaDevice(index=len(chosen), name=device[2], memory_mb=device[3],
                                 visible_id=entry))
    return tuple(chosen)


# --- the decision -----------------------------------------------------------------------------

def plan(*, engine_kind: str, resources: ResourceRequest, host: HostInfo, device: str | None = None,
         backend: str | None = None, python: str | os.PathLike | None = None) -> Plan:
    """Decide backend, device, threads and environment for one task.

    `device` is the user's explicit choice (`cpu`, `cuda`, `cuda:N`) and beats the resources'
    `gpus`; `backend` is an explicitly requested backend and beats the engine kind. A GPU request
    this host cannot serve is a ConfigError here, before anything runs. `python` is the worker's
    interpreter (a recipe environment's, from runtime.envs.ensure_env); None = the runtime's own.
    """
    from .backends import backend_class, engine_kinds

    python = None if python is None else os.fspath(python)
    known = engine_kinds()
    if engine_kind not in known:
        raise ConfigError(f"Unknown engine kind {engine_kind!r}: expected "
                          f"{' or '.join(repr(k) for k in known)}")
    gpus, pinned, source = _gpu_request(resources, device)
    if backend is not None and backend_class(backend).on_cluster:
        return _cluster_plan(backend, engine_kind, resources, gpus, source).model_copy(
            update={"python": python})
    threads, thread_note = _threads(resources, host)

    if backend is None:
        backend = PYSPARK if engine_kind == "pyspark" else (PYTHON_CUDA if gpus else PYTHON_CPU)
        why_backend = f"{engine_kind} engine"
    else:
        why_backend = f"{engine_kind} engine, backend {backend} requested"
    if backend == PYTHON_CPU and gpus:
        raise ConfigError(f"Backend {PYTHON_CPU} runs on the CPU, but the task requests "
                          f"{_count(gpus, 'GPU')} ({source}); pass --device cpu to run on the CPU")
    if backend == PYTHON_CUDA and not gpus:
        if device is not None and device.strip().lower() == "cpu":
            raise ConfigError(f"Backend {PYTHON_CUDA} runs on a GPU, but --device cpu was given")
        gpus, source = 1, f"backend {PYTHON_CUDA}"
    if gpus and not backend_class(backend).local_gpus:
        raise ConfigError(f"The {backend} backend schedules no GPUs, but the task requests "
                          f"{_count(gpus, 'GPU')} ({source}); pass --device cpu to run on the CPU")

    chosen = _choose_devices(_whole(gpus), pinned, source, host)
    env = {name: str(threads) for name in THREAD_ENV_VARS}
    # An empty mask hides every GPU: a CPU run can never grab one by accident. Indices follow
    # the PCI bus, as nvidia-smi numbers them (CUDA's default order is "fastest first").
    env["CUDA_VISIBLE_DEVICES"] = ",".join(d.cuda_visible_id for d in chosen)
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    if chosen:
        worker_device = "cuda:0" if len(chosen) == 1 else "cuda"
        given = ", ".join(f"GPU {d.index}" for d in chosen)
        host_note = f"host has {_count(len(host.cuda_devices), 'CUDA device')}"
        reason = (f"{why_backend}, {_gpu_phrase(gpus, source)}, {host_note} -> {backend} on "
                  f"{worker_device} ({given}), {threads} threads{thread_note}")
    else:
        worker_device = "cpu"
        reason = (f"{why_backend}, {_gpu_phrase(gpus, source)} -> {backend} on cpu, "
                  f"{threads} threads{thread_note}")
    return Plan(backend=backend, device=worker_device, threads=threads,
                gpu_indices=tuple(d.index for d in chosen), gpus=gpus if chosen else 0, env=env,
                reason=reason, python=python)


def _cluster_plan(backend: str, engine_kind: str, resources: ResourceRequest, gpus: int,
                  source: str) -> Plan:
    """A cluster backend schedules the task itself: no local device checks, no core cap."""
    threads = resources.cpus or 1
    env = {name: str(threads) for name in THREAD_ENV_VARS}
    device = "cuda" if gpus else "cpu"
    reason = (f"{engine_kind} engine, backend {backend} requested, {_gpu_phrase(gpus, source)} -> "
              f"the {backend} cluster places it ({device}, {threads} threads)")
    return Plan(backend=backend, device=device, threads=threads, env=env, reason=reason,
                resources=resources, on_cluster=True)


def _threads(resources: ResourceRequest, host: HostInfo) -> tuple[int, str]:
    if resources.cpus is None:
        return host.cpu_count, " (all host cores)"
    if resources.cpus > host.cpu_count:
        return host.cpu_count, f" ({resources.cpus} cpus requested, capped at the host's {host.cpu_count} cores)"
    return resources.cpus, f" ({resources.cpus} cpus requested)"


def _whole(gpus: float) -> int:
    """Devices a request occupies: a share below 1 still needs one."""
    import math

    return int(math.ceil(gpus - 1e-9)) if gpus > 0 else 0


def _gpu_request(resources: ResourceRequest, device: str | None) -> tuple[float, int | None, str]:
    """(GPUs wanted, pinned device index or None, where the request came from, for messages).
    A share (gpus: 0.5) stays a share under --device cuda and cuda:N."""
    requested = resources.gpus or 0
    if device is None:
        return requested, None, f"gpus={requested} in the resources" if requested else ""
    text = device.strip().lower()
    if text == "cpu":
        return 0, None, (f"--device cpu overrides gpus={requested} in the resources" if requested
                         else "--device cpu")
    match = _CUDA_DEVICE.fullmatch(text)
    if match is None:
        raise ConfigError(f"Unknown device {device!r}: expected cpu, cuda or cuda:N")
    if match.group(1) is None:
        return requested or 1, None, (f"--device cuda, gpus={requested} in the resources"
                                         if requested else "--device cuda")
    if requested > 1:
        raise ConfigError(f"--device {text} pins one GPU, but the task requests {requested} GPUs; "
                          "pass --device cuda to use several")
    return (requested if 0 < requested < 1 else 1), int(match.group(1)), f"--device {text}"


def _gpu_phrase(gpus: int, source: str) -> str:
    if not gpus:
        return f"no GPU ({source})" if source else "no GPU requested"
    return f"{_count(gpus, 'GPU')} requested ({source})"


def _choose_devices(gpus: int, pinned: int | None, source: str, host: HostInfo) -> tuple[CudaDevice, ...]:
    from .capacity import NeverFits   # a request this host can never serve: a 400, never queued

    available = host.cuda_devices
    if pinned is not None:
        match = [d for d in available if d.index == pinned]
        if not match:
            have = (f"only {', '.join(f'cuda:{d.index}' for d in available)}" if available
                    else "no CUDA device")
            raise NeverFits(f"The task asks for cuda:{pinned} ({source}) but this host has {have}; "
                              "pass --device cpu to run on the CPU")
        return tuple(match)
    if gpus > len(available):
        have = f"only {_count(len(available), 'CUDA device')}" if available else "no CUDA device"
        raise NeverFits(f"The task requests {_count(gpus, 'GPU')} ({source}) but this host has "
                          f"{have}; pass --device cpu to run on the CPU")
    return tuple(available[:gpus])


def _count(n: float, noun: str) -> str:
    if 0 < n < 1:
        return f"a {n:g} share of one {noun}"
    return f"{n:g} {noun}{'' if n == 1 else 's'}"


def describe(plan: Plan) -> str:
    """The plan as a few aligned lines, for `--dry-run`."""
    gpus = ", ".join(str(i) for i in plan.gpu_indices) or "none"
    env = " ".join(f"{k}={v!s}" if v else f"{k}=''" for k, v in sorted(plan.env.items()))
    rows = [("backend", plan.backend), ("device", plan.device), ("threads", str(plan.threads)),
            ("gpus", gpus), ("python", plan.python or "the runtime's own"), ("env", env),
            ("reason", plan.reason)]
    return "\n".join(f"{key:<8} {value}" for key, value in rows)
