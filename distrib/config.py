"""Spec section `distributed`: how many workers, on what, and DeepSpeed's own config."""
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from compression.spec_types import NonNegativeFloat, PositiveInt

RAY_RESOURCE_UNIT = 0.0001


class DistributedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    num_workers: PositiveInt = Field(2, description="DeepSpeed workers (ranks), as in Ray's ScalingConfig")
    use_gpu: bool = Field(False, description="one GPU per worker, NCCL; otherwise CPU and gloo")
    resources_per_worker: dict[str, NonNegativeFloat] | None = Field(
        None, description="Ray resources per worker, e.g. {CPU: 2}; default 1 CPU (plus 1 GPU with use_gpu)")
    backend: Literal["torch", "mpi"] = Field(
        "torch", description="gradient exchange: torch.distributed (gloo/NCCL) or mpi (mpi4py, needs launcher: mpi)")
    launcher: Literal["ray", "mpi"] = Field(
        "ray", description="ray: Ray Train starts the workers; mpi: `mpiexec -n W python -m launch run SPEC`")
    deepspeed: dict[str, Any] = Field(
        default_factory=dict,
        description="passed through to the DeepSpeed config, merged with the keys the spec sets")

    @field_validator("resources_per_worker")
    @classmethod
    def _ray_precision(cls, resources: dict[str, float] | None) -> dict[str, float] | None:
        # Ray counts resources in units of 0.0001 and refuses a request it would round to 0.
        tiny = [name for name, amount in (resources or {}).items() if 0 < amount < RAY_RESOURCE_UNIT]
        if tiny:
            raise ValueError(f"{', '.join(tiny)}: Ray counts resources in units of {RAY_RESOURCE_UNIT}; "
                             f"use 0 or at least {RAY_RESOURCE_UNIT}")
        return resources

    @property
    def comm_backend(self) -> str:
        return "nccl" if self.use_gpu else "gloo"

    def worker_resources(self) -> dict[str, float]:
        """What Ray reserves for each worker (Ray Train's defaults made explicit)."""
        resources = dict(self.resources_per_worker or {})
        resources.setdefault("CPU", 1.0)
        if self.use_gpu:
            resources.setdefault("GPU", 1.0)
        return resources
