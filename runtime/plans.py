"""A plan: where a task runs, as the dispatcher (runtime.dispatch) decided it and a backend
(runtime.backends) receives it. Data only, below both: the planner reads the backends'
declarations, and the backends read plans.
"""
from __future__ import annotations

import os
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, field_serializer

from .resources import ResourceRequest

__all__ = ["Plan"]


class Plan(BaseModel):
    """Where a task runs. `device` is the device string the worker sees (after CUDA_VISIBLE_DEVICES
    renumbering); `gpu_indices` are the host's device indices the run was given."""

    model_config = ConfigDict(frozen=True)

    backend: str
    device: str
    threads: int = Field(ge=1)
    gpu_indices: tuple[int, ...] = ()
    # The GPUs asked for: a whole number, or a share below 1 of one device (two 0.5 runs share
    # it); 0 = no GPU. The queue leases by it (runtime.capacity.demand_for).
    gpus: float = 0
    env: dict[str, str] = Field(default_factory=dict)
    reason: str
    resources: Optional[ResourceRequest] = None   # what the task asked for, for cluster backends
    # A cluster's plan: the run takes nothing of this host's capacity (runtime.capacity).
    on_cluster: bool = Field(default=False, exclude=True)
    # The interpreter the worker runs with: a recipe's environment (runtime.envs); None = the
    # runtime's own (sys.executable).
    python: Optional[str] = None

    @field_serializer("python")
    def _python_text(self, value: Any) -> Optional[str]:
        # model_copy(update=...) does not validate: a Path put there is still written as text
        return None if value is None else os.fspath(value)

    def to_record(self) -> dict[str, Any]:
        return self.model_dump(mode="json")
