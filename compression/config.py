"""The `compression:` section of a job spec: what each worker sends per step.

Error feedback here works on *gradients*, not on learning-rate-scaled updates as in
Stich, Cordonnier & Jaggi (2018), whose memory is `m += lr*g; send comp_k(m); m -=
comp_k(m)`. Keeping the memory in gradient units means the optimizer after the exchange
may be Adam (or anything else) and PBT may change a member's learning rate mid-run
without rescaling the memory.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from .methods import METHODS
from .spec_types import Float, Int

MethodName = Literal[tuple(METHODS)]  # "none", "topk", "randomk", "powersgd": the registry's names
Scope = Literal["global", "layerwise"]
RandomKMode = Literal["shared", "independent"]
ValueDtype = Literal["fp32", "fp16", "bf16"]


class CompressionConfig(BaseModel):
    """How gradients are sparsified and exchanged between data-parallel workers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: MethodName = Field(
        "none",
        description="none: dense all-reduce; topk: k largest magnitudes per member "
        "(sparse all-gather); randomk: k random coordinates per member; powersgd: rank-r "
        "factors of each weight matrix per member (Vogels et al. 2019; two all-reduces).",
    )
    density: Float = Field(
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
    warmup_steps: Int = Field(
        0,
        ge=0,
        description="Steps 0..warmup_steps-1 send the exact dense fp32 gradient "
        "(as PowerSGD's start_powerSGD_iter) before compression starts.",
    )
    overlap: bool = Field(
        True,
        description="true: exchange each bucket of gradients (about 25 MiB) while the backward pass "
        "still runs, as DDP does; the same result bit for bit as false (after the backward pass). "
        "PowerSGD overlaps its first all-reduce only; scope global and train.precision fp16 "
        "exchange after the backward pass whatever it says (distrib/overlap.py).",
    )

    rank: Int | None = Field(
        None,
        ge=1,
        validate_default=True,
        description="powersgd only (and required there): the approximation rank r of every "
        "weight matrix, as torch's matrix_approximation_rank (try 1, 2, 4, ...).",
    )
    min_compression_rate: Float = Field(
        2.0,
        gt=0,
        description="powersgd only (other methods ignore it): a matrix [n, m] is factorized "
        "only when (n + m) * rank * min_compression_rate < n * m, else sent dense (torch's "
        "min_compression_rate).",
    )

    @field_validator("rank")
    @classmethod
    def _rank_only_with_powersgd(cls, v: int | None, info: ValidationInfo) -> int | None:
        method = info.data.get("method")  # absent when the method itself was invalid
        if method == "powersgd" and v is None:
            raise ValueError("method powersgd needs a rank: set compression.rank (1, 2, 4, ...)")
        if method not in (None, "powersgd") and v is not None:
            raise ValueError(f"rank is PowerSGD's; method {method!r} uses density instead: remove "
                             "compression.rank or set compression.method: powersgd")
        return v

    @field_validator("scope", "value_dtype")
    @classmethod
    def _powersgd_is_layerwise_fp32(cls, v: str, info: ValidationInfo) -> str:
        # PowerSGD factorizes each weight matrix on its own, and its factors are summed in
        # their own dtype; a global bucket or a narrower wire dtype is not implemented.
        allowed = {"scope": "layerwise", "value_dtype": "fp32"}[info.field_name]
        if info.data.get("method") == "powersgd" and v != allowed:
            raise ValueError(f"method powersgd supports only {info.field_name}: {allowed}")
        return v

    @field_validator("overlap", mode="before")
    @classmethod
    def _overlap_is_a_boolean(cls, v: object) -> bool:
        # Not pydantic's lax bool: 1, "yes" or "on" in a spec are more likely slips than choices.
        # A ValueError: pydantic turns only that (not TypeError) into a problem with a path.
        if not isinstance(v, bool):
            raise ValueError("overlap is true or false: write compression.overlap: true (or false)")  # noqa: TRY004
        return v

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
