"""ContextPool (Huang, Talbott, Jaitly, Susskind, ICML 2022, "Efficient Representation
Learning via Adaptive Context Pooling"): a SUBLAYER kind. Bidirectional only.

Legend: P members, B sequences per member, N = P*B, T tokens, D model width, H heads,
K head dim, O window offsets, (Hg, Wg) the task's grid (Hg * Wg = T), R window radius.

Before attention, every token's features are replaced by a weighted mean of its
neighbourhood, whose extent the token chooses itself:
  a_i, b_i = m(x_i)                       m: a small per-member MLP, D -> hidden -> 2
  w_j = sigmoid(a_j)                      pooling weight: how much token j gives to any pool
  sigma_i = max_support * sigmoid(b_i)    support size: std of token i's Gaussian window
  y_i = sum_j w_j g_ij x_j / sum_j w_j g_ij,   g_ij = exp(-|p_i - p_j|^2 / (2 sigma_i^2))
with p the token's position: its index (1-D), or its (row, column) on the grid when the
task has one (isotropic, Euclidean distance). Then standard multi-head softmax attention
runs on the pooled features, q, k and v all from y ("context-wise" attention, the paper's
Figure 2a), with the usual output projection. The block's norms, MLP and residuals are
the standard block's (trainers/model.py TransformerBlock), so as every sigma -> 0, g_ij ->
[i = j], y -> x and the block is exactly the standard softmax block with the same weights.

No public code exists; the paper's text was not available while writing this (only its
abstract and Figure 2's caption), so every detail below is our choice, written down:
- Registry: a SUBLAYER (it acts on x before the q/k/v projections and keeps the standard
  block's MLP), not a BLOCK: the block interface passes neither n_heads nor d_ff, which the
  standard attention and MLP need. The paper places ContextPool between attention blocks
  ("pooled to the same number of features for use in the next attention block"); pooling
  the sublayer's input instead keeps the residual stream per token, so a token's own
  features are never lost, and the support -> 0 limit is the standard block.
- m is pointwise (each token's pooling weight and support from its own features, which
  already carry context from earlier layers); the paper's m may see neighbours. Its output
  layer starts near zero: w ~ 0.5 everywhere and sigma ~ max_support / 2 at init.
- w by a sigmoid (in (0, 1); only ratios matter after the normalisation), sigma by a
  sigmoid scaled to (0, max_support]; the pool is normalised (a weighted mean, so the
  features keep their scale and the support -> 0 limit is exact).
- The window is cut at radius R = ceil(3 max_support) (a Gaussian's weight beyond 3 sigma
  is under 1.1% of its centre's); on a grid, the offsets inside the disc of radius R.
  Cost O(T O D) with O = 2R + 1 (1-D) or ~ pi R^2 (grid) offsets, memory O(T (O + D)).
- Grid: pooling is 2-D when the model passes the task's grid (uses_grid), 1-D otherwise
  (grid None); with a grid, T must be Hg * Wg. Out-of-image neighbours are absent (not
  zero-padded into the mean).
- Key padding (key_mask_PBT): a padded token is in nobody's pool but its own (its output
  is unspecified, kept finite), and padded keys are masked out of attention as usual.
- Causal: no form (the window looks both ways), as the paper's tasks are bidirectional.
- Numerics: the window weights are computed in fp32 (fp64 stays fp64); the pooled
  features are cast back to x's dtype.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from trainers.attention.config import ContextPoolConfig, SoftmaxAttentionConfig
from trainers.attention.softmax import SoftmaxAttention
from trainers.layers import BatchedLinear, residual_init_std


def window_offsets(radius: int, *, two_d: bool) -> list[tuple[int, int]]:
    """(dy, dx) with dy^2 + dx^2 <= radius^2 (dy = 0 in 1-D), the centre first."""
    rows = range(-radius, radius + 1) if two_d else (0,)
    found = [(dy, dx) for dy in rows for dx in range(-radius, radius + 1) if dy * dy + dx * dx <= radius * radius]
    return sorted(found, key=lambda o: o != (0, 0))


def gaussian_pool(x_NTD: torch.Tensor, weight_NT: torch.Tensor, sigma_NT: torch.Tensor, *, radius: int,
                  grid: tuple[int, int] | None, key_mask_NT: torch.Tensor | None = None) -> torch.Tensor:
    """y_i = sum_j w_j g_ij x_j / sum_j w_j g_ij over the window of radius `radius` around
    token i (module docstring), with padded tokens j != i left out. [N, T, D] -> [N, T, D]."""
    N, T, D = x_NTD.shape
    rows, cols = grid or (1, T)
    if rows * cols != T:
        raise ValueError(f"contextpool: the grid {rows}x{cols} holds {rows * cols} tokens, the sequence {T}")
    two_d = grid is not None
    pad_rows = radius if two_d else 0
    offsets = window_offsets(radius, two_d=two_d)
    dtype = torch.promote_types(sigma_NT.dtype, torch.float32)
    # Neighbours' weights, zero outside the image and at padding: [N, rows + 2 pad, cols + 2 R].
    given_NT = weight_NT.to(dtype) if key_mask_NT is None else weight_NT.to(dtype) * key_mask_NT
    given_pad = F.pad(given_NT.view(N, rows, cols), (radius, radius, pad_rows, pad_rows))
    given_NTO = torch.stack([given_pad[:, pad_rows + dy:pad_rows + dy + rows, radius + dx:radius + dx + cols]
                             for dy, dx in offsets[1:]], dim=-1).view(N, T, len(offsets) - 1)
    # A token always pools itself (so a padded token's pool is never empty).
    given_NTO = torch.cat([weight_NT.to(dtype).unsqueeze(-1), given_NTO], dim=-1)
    distance2_O = torch.tensor([dy * dy + dx * dx for dy, dx in offsets], dtype=dtype, device=x_NTD.device)
    spread_NT1 = (2 * sigma_NT.to(dtype) ** 2).clamp_min(torch.finfo(dtype).tiny).unsqueeze(-1)
    share_NTO = given_NTO * torch.exp(-distance2_O / spread_NT1)
    share_NTO = share_NTO / share_NTO.sum(-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
    share_NHWO = share_NTO.to(x_NTD.dtype).view(N, rows, cols, len(offsets))
    x_pad = F.pad(x_NTD.view(N, rows, cols, D), (0, 0, radius, radius, pad_rows, pad_rows))
    # One multiply-add per offset over views of x_pad: no [N, T, O, D] tensor is built.
    y_NHWD = 0
    for o, (dy, dx) in enumerate(offsets):
        y_NHWD = y_NHWD + share_NHWO[..., o, None] * x_pad[:, pad_rows + dy:pad_rows + dy + rows,
                                                            radius + dx:radius + dx + cols]
    return y_NHWD.reshape(N, T, D)


class ContextPoolAttention(nn.Module):
    """Sublayer: x [P, B, T, D] (already normed) -> pooled -> multi-head softmax attention
    -> output projection [P, B, T, D], before the residual."""

    supports_causal = False
    uses_grid = True  # pools on the grid when the task has one, in 1-D otherwise

    def __init__(self, config, *, members: int, causal: bool, layer: int = 0,
                 grid: tuple[int, int] | None = None):
        super().__init__()
        if causal:
            raise ValueError("attention kind 'contextpool' has no causal form (its window looks both ways); "
                             "for a causal model use 'softmax', 'linear', 'performer' or 'flash'")
        options: ContextPoolConfig = config.attention
        self.n_heads = config.n_heads
        self.grid = grid
        self.max_support = options.max_support
        self.radius = math.ceil(3 * options.max_support)
        self.predictor_in = BatchedLinear(members, config.d_model, options.predictor_width)
        self.predictor_out = BatchedLinear(members, options.predictor_width, 2)  # (pooling weight, support)
        # The same names as the model's SelfAttention, so a softmax block's weights load as they are.
        self.qkv = BatchedLinear(members, config.d_model, 3 * config.d_model)
        self.kernel = SoftmaxAttention(SoftmaxAttentionConfig(), members=members,
                                       head_dim=config.d_model // config.n_heads, causal=False)
        self.proj = BatchedLinear(members, config.d_model, config.d_model, init_std=residual_init_std(config.n_layers))

    def pooled(self, x_PBTD: torch.Tensor, key_mask_PBT: torch.Tensor | None = None) -> torch.Tensor:
        P, B, T, D = x_PBTD.shape
        dtype = torch.promote_types(x_PBTD.dtype, torch.float32)  # window weights in fp32; fp64 stays fp64
        logits_PBT2 = self.predictor_out(F.gelu(self.predictor_in(x_PBTD))).to(dtype)
        weight_NT, sigma_NT = torch.sigmoid(logits_PBT2).reshape(P * B, T, 2).unbind(-1)
        key_mask_NT = None if key_mask_PBT is None else key_mask_PBT.reshape(P * B, T)
        y_NTD = gaussian_pool(x_PBTD.reshape(P * B, T, D), weight_NT, self.max_support * sigma_NT,
                              radius=self.radius, grid=self.grid, key_mask_NT=key_mask_NT)
        return y_NTD.view(P, B, T, D)

    def forward(self, x_PBTD: torch.Tensor, key_mask_PBT: torch.Tensor | None = None) -> torch.Tensor:
        P, B, T, D = x_PBTD.shape
        H, K = self.n_heads, D // self.n_heads
        y_PBTD = self.pooled(x_PBTD, key_mask_PBT)
        # As the model's SelfAttention: members folded into the batch for SDPA.
        q_NHTK, k_NHTK, v_NHTK = self.qkv(y_PBTD).view(P * B, T, 3, H, K).permute(2, 0, 3, 1, 4)
        key_mask_NT = None if key_mask_PBT is None else key_mask_PBT.reshape(P * B, T)
        out_NHTK = self.kernel(q_NHTK, k_NHTK, v_NHTK, key_mask_NT)
        return self.proj(out_NHTK.transpose(1, 2).reshape(P, B, T, D))
