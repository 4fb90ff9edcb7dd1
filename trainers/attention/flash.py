"""FLASH (Hua, Dai, Liu, Le, ICML 2022, "Transformer Quality in Linear Time"): a BLOCK kind.

Legend: P members, B sequences per member, T tokens, D model width, E = expansion * D
gate/value width, S = qk_dim, G chunks, L = group_size tokens per chunk; x = any leading
axes (P, B).

One gated attention unit (GAU) replaces both attention and the MLP:
  x_n = LayerNorm(x);  u, v, z = SiLU(x_n W)            u, v: [E], z: [S] (one weak head)
  quad_q, quad_k, lin_q, lin_k = z * gamma_i + beta_i    four cheap per-dim scale/offsets
  out = x + dropout((u * mixed_chunk_attention(...)) W_o)
Mixed-chunk attention: inside each chunk of L tokens, quadratic relu(q.k / L)^2
attention (causal: masked); across chunks, un-normalized linear attention lin_q (lin_k^T v)
(causal: over earlier chunks only, an exclusive cumulative sum, scaled by 1/L per chunk;
bidirectional: over all tokens, scaled by 1/T), as in the paper's pseudocode. Padding
(key_mask_PBT) is silenced by zeroing its values, and T then counts real tokens only, so
appending padding changes nothing at real positions. Cost
O(T L (S + E) + T S E): linear in T. No relative position bias: the model adds learned
absolute positions before the first block.

Every weight has a leading member axis P (BatchedLinear / BatchedLayerNorm), so members
stay independent. Numerics: runs in the input dtype; there is no exp and relu^2 of q.k / L
stays small, so half precision is safe here.
"""
import torch
import torch.nn.functional as F
from torch import nn

from trainers.attention.chunked import cross_chunk_attention, merge_chunks, split_chunks
from trainers.attention.config import FlashAttentionConfig
from trainers.layers import BatchedLayerNorm, BatchedLinear, MemberDropout, residual_init_std


def mixed_chunk_attention(quad_q_xTS: torch.Tensor, quad_k_xTS: torch.Tensor, lin_q_xTS: torch.Tensor,
                          lin_k_xTS: torch.Tensor, v_xTE: torch.Tensor, *, group_size: int, causal: bool,
                          key_mask_xT: torch.Tensor | None = None) -> torch.Tensor:
    """[..., T, S] x4 and [..., T, E] -> [..., T, E]. T is zero-padded to a multiple of
    group_size; zero values make the padded tokens add nothing to any sum, so no mask is
    needed. Padding tokens (key_mask_xT False) are silenced the same way: their values are
    zeroed, and the bidirectional 1/T counts real tokens only."""
    T, L = v_xTE.shape[-2], group_size
    if key_mask_xT is not None:
        v_xTE = v_xTE * key_mask_xT.unsqueeze(-1)
    length = T if key_mask_xT is None else key_mask_xT.sum(-1)[..., None, None]
    # The linear part's 1/L (causal) or 1/T scale is applied to lin_q, the narrower side.
    lin_q_xTS = lin_q_xTS / (L if causal else length)
    quad_q, quad_k, lin_q, lin_k, v = (split_chunks(x, L) for x in (quad_q_xTS, quad_k_xTS, lin_q_xTS,
                                                                     lin_k_xTS, v_xTE))
    attn_xGLL = F.relu(quad_q @ quad_k.transpose(-2, -1) / L) ** 2
    if causal:
        attn_xGLL = attn_xGLL.tril()
        lin_xGLE = cross_chunk_attention(lin_q, lin_k, v)
    else:
        # One state over every token: [..., S, E], shared by all chunks.
        state_xSE = lin_k.flatten(-3, -2).transpose(-2, -1) @ v.flatten(-3, -2)
        lin_xGLE = lin_q @ state_xSE.unsqueeze(-3)
    return merge_chunks(attn_xGLL @ v + lin_xGLE, T)


class FlashBlock(nn.Module):
    """Pre-norm GAU block with residual: x [P, B, T, D] -> [P, B, T, D]."""

    supports_causal = True

    def __init__(self, config: FlashAttentionConfig, *, members: int, d_model: int, n_layers: int,
                 causal: bool, dropout: float, layer: int = 0):
        super().__init__()
        self.causal = causal
        self.group_size = config.group_size
        self.widths = (round(config.expansion * d_model),) * 2 + (config.qk_dim,)  # u, v, z
        self.norm = BatchedLayerNorm(members, d_model)
        self.hidden = BatchedLinear(members, d_model, sum(self.widths))
        # Scale 1, offset 0 at init: the four q/k views start equal to z (a non-degenerate
        # relu^2 map) and separate as they train.
        self.qk_scale = nn.Parameter(torch.ones(members, 4, config.qk_dim))  # [P, 4, S]
        self.qk_offset = nn.Parameter(torch.zeros(members, 4, config.qk_dim))  # [P, 4, S]
        self.out = BatchedLinear(members, self.widths[0], d_model, init_std=residual_init_std(n_layers))
        self.dropout = MemberDropout(members, dropout)

    def forward(self, x_PBTD: torch.Tensor, key_mask_PBT: torch.Tensor | None = None) -> torch.Tensor:
        u_PBTE, v_PBTE, z_PBTS = F.silu(self.hidden(self.norm(x_PBTD))).split(self.widths, dim=-1)
        P = x_PBTD.shape[0]
        qk_PBT4S = z_PBTS.unsqueeze(-2) * self.qk_scale.view(P, 1, 1, 4, -1) + self.qk_offset.view(P, 1, 1, 4, -1)
        quad_q, quad_k, lin_q, lin_k = qk_PBT4S.unbind(-2)
        attn_PBTE = mixed_chunk_attention(quad_q, quad_k, lin_q, lin_k, v_PBTE, group_size=self.group_size,
                                          causal=self.causal, key_mask_xT=key_mask_PBT)
        return x_PBTD + self.dropout(self.out(u_PBTE * attn_PBTE))
