"""Spec section `model.attention`: which attention kind a model uses, and its options.

One frozen model per kind; `kind` picks the model (a pydantic discriminated union), so a
spec names only the options of the kind it uses and a typo is an error, not a silent
default. `trainers/config.py` defaults the section to `{"kind": "softmax"}`.
"""
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from compression.spec_types import (
    Float,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    Seed,
)


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
    seed: Seed = Field(0, description="seed of the random projection; with the layer index and the redraw count it "
                                     "fixes the projection, identical on every data-parallel worker")
    chunk_size: PositiveInt = Field(64, description="causal form: tokens per chunk")


class LaraAttentionConfig(_KindConfig):
    """Linear randomized attention (Zheng, Wang, Kong 2022). Bidirectional only."""

    kind: Literal["lara"] = "lara"
    num_landmarks: PositiveInt = Field(16, description="proposals C: the real tokens are split into C disjoint "
                                                       "contiguous segments whose query and key means centre "
                                                       "the proposals; cost is O(T * C) per head")
    alpha_coeff: Float = Field(1.0, ge=0, description="weight of the query-dependent part of the multiple "
                                                      "importance sampling weights; 0 = balance heuristic only")
    seed: Seed = Field(0, description="seed of the training-time proposal samples (eval uses the proposal means)")


class VarsAttentionConfig(_KindConfig):
    """VARS-D (Shi et al. 2022): attention as unrolled sparse reconstruction of the values over
    random features of the queries. Bidirectional only."""

    kind: Literal["vars"] = "vars"
    lam: Float = Field(0.3, ge=0, description="sparsity weight lambda of the reconstruction (scaled by a "
                                               "learned factor per member); 0 = plain least squares")
    num_steps: NonNegativeInt = Field(5, description="unrolled ISTA steps after the first shrink")
    feature_ratio: PositiveInt = Field(2, description="random features per head as a multiple of the head dim")
    shrink: Literal["gelu", "soft"] = Field(
        "gelu", description="gelu: the reference's smooth shrink sign(z) gelu(|z| - t); soft: the plain "
                            "soft threshold sign(z) relu(|z| - t)")
    dictionary: Literal["queries", "keys"] = Field(
        "queries", description="queries: the reference's, keys tied to queries (the key projection goes unused); "
                               "keys: the dictionary is built from the keys and the queries read the code out")
    seed: Seed = Field(0, description="seed of the fixed random projection; with the layer index it fixes the "
                                     "projection, identical on every data-parallel worker")


class ContextPoolConfig(_KindConfig):
    """ContextPool (Huang et al. 2022): each token pools its neighbourhood with a learned weight
    and a learned Gaussian support before softmax attention. Bidirectional only."""

    kind: Literal["contextpool"] = "contextpool"
    max_support: PositiveFloat = Field(
        2.0, description="largest support size: a token's Gaussian window has std up to this many tokens (pixels "
                         "on a grid) and is cut at radius ceil(3 * max_support); cost grows with that radius "
                         "(linearly in 1-D, quadratically on a grid)")
    predictor_width: PositiveInt = Field(32, description="hidden width of the per-token network that predicts the "
                                                         "pooling weight and support size")


class FlashAttentionConfig(_KindConfig):
    """FLASH gated attention unit with mixed-chunk attention (Hua et al. 2022).

    A block kind: it replaces attention AND the MLP, so `d_ff` and `n_heads` are unused.
    """

    kind: Literal["flash"] = "flash"
    group_size: PositiveInt = Field(64, description="tokens per chunk: quadratic attention inside, linear across")
    qk_dim: PositiveInt = Field(128, description="width s of the shared query/key projection z")
    expansion: PositiveFloat = Field(2.0, description="gate/value width e*d as a multiple of d_model")


class RpeFftAttentionConfig(_KindConfig):
    """Linear attention masked by a learned relative-position function f(i - j), computed by
    FFT (Choromanski et al. 2022, "From block-Toeplitz matrices to differential equations on graphs")."""

    kind: Literal["rpe_fft"] = "rpe_fft"
    max_offset: PositiveInt = Field(
        1024, description="largest |i - j| with its own learned value of f; farther pairs share the value at "
                          "+-max_offset (the table holds 2 * max_offset + 1 entries per member and head)")
    pass_buffer_mb: PositiveFloat = Field(
        2.0, description="most memory of each buffer of one FFT pass (a pass convolves phi(k)_m v_j for some "
                         "(sequence, head) rows x features m x value columns j at once; about five such buffers "
                         "are live in backward, nothing of their size is kept between passes): smaller means "
                         "less memory and more passes; 2 MB was fastest on CPU (0.5-16 MB measured) and keeps "
                         "them in cache (on a GPU, where each pass launches kernels, larger is likely faster: "
                         "not measured); one sequence's FFT points (about T + max_offset) per pass at least, "
                         "whatever it says")
    grid_mask: bool = Field(
        True, description="on a task with a grid (H, W): f is a function of the offset (d_row, d_col) on the grid "
                          "(2-D block-Toeplitz mask by 2-D FFT, a table of (2*min(max_offset, H-1)+1) x "
                          "(2*min(max_offset, W-1)+1) entries); false: f(i - j) along the row-major sequence, "
                          "as on 1-D tasks. Ignored on 1-D tasks")
    fft_dtype: Literal["float64", "float32"] = Field(
        "float64", description="precision of the FFT convolutions: float32 rounds each row's sums to about 1e-7 "
                               "of the LARGEST row's, so rows with a small normaliser (the first tokens of a "
                               "causal sequence, or a sharply decaying f) lose digits as T grows; float64 does "
                               "not, at about twice the FFT time and memory")


class RippleAttentionConfig(_KindConfig):
    """Ripple attention (Zheng, Pan, Kong 2022): linear attention whose keys are weighted by
    their ring (Chebyshev distance) around the query on the image grid, by stick-breaking
    weights. Needs a task with a grid; bidirectional only."""

    kind: Literal["ripple"] = "ripple"
    rings: PositiveInt = Field(
        8, description="r-hat: rings 0 .. rings-1 around the query (ring r = keys at Chebyshev distance r) each "
                       "get their own stick-breaking weight, every farther key shares the rest of the stick; cost "
                       "is O(T * rings) per feature pair (rings >= max(H, W) gives every ring its own weight, "
                       "O(T^1.5) on a square grid)")
    query_dependent: bool = Field(
        True, description="beta_r = sigmoid(b_r + w_r . q / sqrt(K)) per query (w starts at 0); false: "
                          "beta_r = sigmoid(b_r), the same for every query")
    feature_chunk: PositiveInt = Field(
        8, description="feature dims of phi(k) per summed-area-table pass: bounds the [N, H, T, chunk, K+1] "
                       "table (memory) at the cost of more, smaller passes")
    table_dtype: Literal["float64", "float32"] = Field(
        "float64", description="precision of the summed-area tables: a box sum is a difference of prefix sums "
                               "over up to T keys, so float32 leaves the small inner rings an absolute error "
                               "near 1e-7 * T times a key's size; float64 does not, at about twice the time and "
                               "memory of the tables")
    form: Literal["auto", "tables", "dense"] = Field(
        "auto", description="tables: the paper's summed-area tables, O(T * rings); dense: the same weights as a "
                            "T x T matrix, O(T^2), far faster on small grids; auto: dense up to 256 tokens (a 16x16 "
                            "grid), tables beyond")


class CollaborativeAttentionConfig(_KindConfig):
    """Collaborative multi-head attention (Cordonnier, Loukas, Jaggi 2020): one query/key
    projection shared by all heads, each head a mixing vector over its dims."""

    kind: Literal["collaborative"] = "collaborative"
    key_dim: PositiveInt = Field(
        64, description="width D_k of the shared query/key projection (at most d_model; the paper keeps quality "
                        "at d_model/4 to d_model/8)")
    mixing_init: Literal["uniform", "concatenate", "all_ones"] = Field(
        "uniform", description="mixing matrix at init: 'uniform' = N(0, 0.2^2) entries (the reference's "
                               "default, named so there), 'concatenate' = head h owns dims "
                               "[h*ceil(D_k/H), (h+1)*ceil(D_k/H)) as in standard multi-head attention, "
                               "'all_ones' = every head sees every dim")


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
          VarsAttentionConfig, ContextPoolConfig,
          FlashAttentionConfig, HypercubeAttentionConfig, MraAttentionConfig, RpeFftAttentionConfig,
          CollaborativeAttentionConfig, RippleAttentionConfig],
    Field(discriminator="kind"),
]
