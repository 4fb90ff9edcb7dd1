"""Spec section `model.attention`: which attention kind a model uses, and its options.

One frozen model per kind; `kind` picks the model (a pydantic discriminated union), so a
spec names only the options of the kind it uses and a typo is an error, not a silent
default. `trainers/config.py` defaults the section to `{"kind": "softmax"}`.
"""
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, NonNegativeInt, PositiveFloat, PositiveInt


class _KindConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SoftmaxAttentionConfig(_KindConfig):
    """Exact attention through scaled_dot_product_attention (the baseline)."""

    kind: Literal["softmax"] = "softmax"


class LinearAttentionConfig(_KindConfig):
    """Kernelized linear attention, feature map elu(x) + 1 (Katharopoulos et al. 2020)."""

    kind: Literal["linear"] = "linear"
    chunk_size: PositiveInt = Field(64, description="causal form: tokens per chunk (quadratic inside a chunk, "
                                                    "running state across chunks)")


class PerformerAttentionConfig(_KindConfig):
    """FAVOR+ positive orthogonal random features for softmax (Choromanski et al. 2021)."""

    kind: Literal["performer"] = "performer"
    nb_features: PositiveInt = Field(64, description="random features per head; error shrinks like 1/sqrt(nb_features)")
    redraw_interval: NonNegativeInt = Field(
        1000, description="training forward passes (micro-batches) between feature redraws; 0 = never redraw")
    seed: int = Field(0, description="seed of the random projection; with the layer index and the redraw count it "
                                     "fixes the projection, identical on every data-parallel worker")
    chunk_size: PositiveInt = Field(64, description="causal form: tokens per chunk")


class LaraAttentionConfig(_KindConfig):
    """Linear randomized attention (Zheng, Wang, Kong 2022). Bidirectional only."""

    kind: Literal["lara"] = "lara"
    num_landmarks: PositiveInt = Field(16, description="proposals C: the real tokens are split into C disjoint "
                                                       "contiguous segments whose query and key means centre "
                                                       "the proposals; cost is O(T * C) per head")
    alpha_coeff: float = Field(1.0, ge=0, description="weight of the query-dependent part of the multiple "
                                                      "importance sampling weights; 0 = balance heuristic only")
    seed: int = Field(0, description="seed of the training-time proposal samples (eval uses the proposal means)")


class FlashAttentionConfig(_KindConfig):
    """FLASH gated attention unit with mixed-chunk attention (Hua et al. 2022).

    A block kind: it replaces attention AND the MLP, so `d_ff` and `n_heads` are unused.
    """

    kind: Literal["flash"] = "flash"
    group_size: PositiveInt = Field(64, description="tokens per chunk: quadratic attention inside, linear across")
    qk_dim: PositiveInt = Field(128, description="width s of the shared query/key projection z")
    expansion: PositiveFloat = Field(2.0, description="gate/value width e*d as a multiple of d_model")


class HypercubeAttentionConfig(_KindConfig):
    """Block-sparse attention over a hypercube of token blocks (Wang et al. 2022)."""

    kind: Literal["hypercube"] = "hypercube"
    block_size: PositiveInt = Field(16, description="tokens per block; each block attends to itself and its "
                                                    "ceil(log2(T / block_size)) hypercube neighbours")


class MraAttentionConfig(_KindConfig):
    """MRA-2 multi-resolution approximate attention (Zeng et al. 2022). Bidirectional only."""

    kind: Literal["mra"] = "mra"
    block_size: PositiveInt = Field(32, description="tokens per block; low-resolution logits are between block "
                                                    "means")
    blocks_per_row: PositiveInt = Field(8, description="budget of exactly computed blocks, on average per block "
                                                       "row (T / block_size rows); picked by top low-resolution "
                                                       "logit over the whole block matrix")
    approx_mode: Literal["full", "sparse"] = Field(
        "full", description="full (MRA-2): unrefined blocks use the low-resolution approximation; sparse "
                            "(MRA-2-s): they get zero weight")
    initial_prior_first_n_blocks: NonNegativeInt = Field(
        0, description="always refine the first n block rows and columns (global tokens)")
    initial_prior_diagonal_n_blocks: NonNegativeInt = Field(
        0, description="always refine a band of n blocks around the diagonal (local window)")


AttentionConfig = Annotated[
    Union[SoftmaxAttentionConfig, LinearAttentionConfig, PerformerAttentionConfig, LaraAttentionConfig,
          FlashAttentionConfig, HypercubeAttentionConfig, MraAttentionConfig],
    Field(discriminator="kind"),
]
