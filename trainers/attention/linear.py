"""Kernelized linear attention (Katharopoulos et al. 2020, "Transformers are RNNs").

Legend: N = P*B folded batch, H heads, T tokens, K head dim.

softmax(q k^T) is replaced by phi(q) phi(k)^T with phi(x) = elu(x) + 1 > 0, so the
product can be reassociated: phi(q) (phi(k)^T v), O(T K^2) instead of O(T^2 K). The
causal form uses chunked prefix sums (see chunked.py).

Numerics: computed in fp32 and cast back. The normalizer phi(q) . sum phi(k) is a sum of
up to T positive terms; in fp16/bf16 it loses precision (and fp16 overflows) at long T.
"""
import torch
import torch.nn.functional as F
from torch import nn

from trainers.attention.chunked import feature_map_attention
from trainers.attention.config import LinearAttentionConfig


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    """phi(x) = elu(x) + 1: positive, so every key's weight phi(q).phi(k) is."""
    return F.elu(x) + 1.0


class LinearAttention(nn.Module):
    supports_causal = True

    def __init__(self, config: LinearAttentionConfig, *, members: int, head_dim: int, causal: bool,
                 layer: int = 0):
        super().__init__()
        self.causal = causal
        self.chunk_size = config.chunk_size

    def forward(self, q_NHTK: torch.Tensor, k_NHTK: torch.Tensor, v_NHTK: torch.Tensor,
                key_mask_NT: torch.Tensor | None = None) -> torch.Tensor:
        phi_q_NHTK = elu_feature_map(q_NHTK.float())
        phi_k_NHTK = elu_feature_map(k_NHTK.float())
        out_NHTK = feature_map_attention(phi_q_NHTK, phi_k_NHTK, v_NHTK.float(), causal=self.causal,
                                         chunk_size=self.chunk_size, eps=1e-6, key_mask_NT=key_mask_NT)
        return out_NHTK.to(v_NHTK.dtype)
