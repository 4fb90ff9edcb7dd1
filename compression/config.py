"""The `compression:` section of a job spec: what each worker sends per step.

Error feedback here works on *gradients*, not on learning-rate-scaled updates as in
Stich, Cordonnier & Jaggi (2018), whose memory is `m += lr*g; send comp_k(m); m -=
comp_k(m)`. Keeping the memory in gradient units means the optimizer after the exchange
may be Adam (or anything else) and PBT may change a member's learning rate mid-run
without rescaling the memory.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Method = Literal["none", "topk", "randomk"]
Scope = Literal["global", "layerwise"]
RandomKMode = Literal["shared", "independent"]
ValueDtype = Literal["fp32", "fp16", "bf16"]


class CompressionConfig(BaseModel):
    """How gradients are sparsified and exchanged between data-parallel workers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Method = Field(
        "none",
        description="none: dense all-reduce; topk: k largest magnitudes per member "
        "(sparse all-gather); randomk: k random coordinates per member.",
    )
    density: float = Field(
        0.01,
        description="Fraction of coordinates sent per member and tensor, in (0, 1]; "
        "k = max(1, round(density * n)).",
    )
    error_feedback: bool = Field(
        True,
        description="Keep what was not sent in a per-member residual and add it back "
        "next step (Stich et al. 2018), in gradient units.",
    )
    scope: Scope = Field(
        "layerwise",
        description="layerwise: select k per tensor; global: one selection over all "
        "parameters of a member flattened together.",
    )
    randomk_mode: RandomKMode = Field(
        "shared",
        description="shared: all workers draw the same indices (seeded by seed, step, "
        "tensor) so only values travel in an all-reduce; independent: each worker "
        "its own indices (seed also mixes in the rank), sent with the values.",
    )
    value_dtype: ValueDtype = Field(
        "fp32",
        description="Dtype of gradient values on the wire (indices are always int32). "
        "Rounding error goes into the error-feedback residual.",
    )
    warmup_steps: int = Field(
        0,
        ge=0,
        description="Steps 0..warmup_steps-1 send the exact dense fp32 gradient "
        "(as PowerSGD's start_powerSGD_iter) before compression starts.",
    )

    @field_validator("density")
    @classmethod
    def _density_in_unit_interval(cls, v: float) -> float:
        if not (0.0 < v <= 1.0):
            raise ValueError(
                f"density must be in (0, 1] (a fraction of coordinates, e.g. 0.01 for 1%), got {v}"
            )
        return v

    def is_dense(self, step: int) -> bool:
        """True when `step` sends the dense gradient: method none, or still in warm-up."""
        return self.method == "none" or step < self.warmup_steps
