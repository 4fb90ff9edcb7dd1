"""Exact softmax attention: the baseline every efficient kind is measured against.

Legend: N = P*B folded batch (members x sequences), H heads, T tokens, K head dim.
"""
import torch
import torch.nn.functional as F
from torch import nn

from trainers.attention.config import SoftmaxAttentionConfig


class SoftmaxAttention(nn.Module):
    supports_causal = True

    def __init__(self, config: SoftmaxAttentionConfig, *, head_dim: int, causal: bool, layer: int = 0):
        super().__init__()
        self.causal = causal

    def forward(self, q_NHTK: torch.Tensor, k_NHTK: torch.Tensor, v_NHTK: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q_NHTK, k_NHTK, v_NHTK, is_causal=self.causal)
