"""Exact softmax attention: the baseline every efficient kind is measured against.

Legend: N = P*B folded batch (members x sequences), H heads, T tokens, K head dim.

Padding goes to scaled_dot_product_attention as a boolean `attn_mask` (True = attend);
without padding the mask is left out, so the fused causal kernels still apply.
"""
import torch
import torch.nn.functional as F
from torch import nn

from trainers.attention.config import SoftmaxAttentionConfig


class SoftmaxAttention(nn.Module):
    supports_causal = True

    def __init__(self, config: SoftmaxAttentionConfig, *, members: int, head_dim: int, causal: bool,
                 layer: int = 0):
        super().__init__()
        self.causal = causal

    def forward(self, q_NHTK: torch.Tensor, k_NHTK: torch.Tensor, v_NHTK: torch.Tensor,
                key_mask_NT: torch.Tensor | None = None) -> torch.Tensor:
        if key_mask_NT is None:
            return F.scaled_dot_product_attention(q_NHTK, k_NHTK, v_NHTK, is_causal=self.causal)
        allowed_N1TT = key_mask_NT[:, None, None, :]
        if self.causal:  # SDPA takes is_causal or a mask, not both: fold causality into the mask
            T = q_NHTK.shape[-2]
            past_TT = torch.ones(T, T, dtype=torch.bool, device=q_NHTK.device).tril()
            # A query with no real key at or before it (left padding) would get an empty
            # row, i.e. NaN; letting every query see itself keeps that row finite.
            allowed_N1TT = (allowed_N1TT & past_TT) | torch.eye(T, dtype=torch.bool, device=q_NHTK.device)
        return F.scaled_dot_product_attention(q_NHTK, k_NHTK, v_NHTK, attn_mask=allowed_N1TT)
