"""Collaborative multi-head attention (Cordonnier, Loukas, Jaggi 2020, "Multi-Head
Attention: Collaborate Instead of Concatenate"): a SUBLAYER kind.

Legend: P members, B sequences per member, T tokens, D model width, H heads, K = D/H value
width per head, Q = key_dim (D_k, the shared query/key width), N = P*B.

Standard multi-head attention gives each head its own query/key projection of width K.
Here all heads share one query projection W_q and one key projection W_k of width Q, and
head h reweights the shared dims by its mixing vector m_h (a row of the [H, Q] mixing
matrix):
  score_h(i, j) = (x_i W_q * m_h) . (x_j W_k) + x_j . c_h,   scaled by 1/sqrt(Q / H)
The content bias c_h [D] stands for the query bias: with b_q per head, (x_i W_q + b_q)
(x_j W_k + b_k)^T differs from the above only by terms constant in j, which softmax
ignores, plus b_q,h . (x_j W_k,h) = x_j . (W_k,h b_q,h): so W_q and W_k need no bias
and c_h = W_k,h b_q,h reproduces a biased multi-head layer exactly (the reference's
reparametrization, used by this kind's oracle test). Values and the output projection
are those of the standard layer. Parameters of the query/key side: 2 D Q + H Q + H D
against 2 D^2 + 2 D for the standard layer.

Why a sublayer: the shared projection and the content bias act on x, so this kind cannot
be a KERNEL (q, k, v in); as a BLOCK it would have to rebuild the standard block's norms
and MLP (and a BLOCK is not told the MLP width). A SUBLAYER replaces only the block's
attention sublayer (trainers/model.py's SelfAttention: projections, attention map,
output projection) and keeps everything else, at the cost of one registry lookup in
TransformerBlock.

Choices the reference leaves open or this code fixes:
- mixing_init as in the reference: "uniform" is its name for N(0, 0.2^2) entries (its
  default); "concatenate" gives head h dims [h*ceil(Q/H), (h+1)*ceil(Q/H)) (the last head
  gets fewer when H does not divide Q); "all_ones".
- The scale 1/sqrt(Q / H) follows the reference (for Q = D it is standard 1/sqrt(K)).
- Every weight, the mixing matrix included, has a leading member axis P; W_q and W_k are
  one BatchedLinear of width 2Q, values one of width D.
- Attention dropout: none (as the other kinds); the block's residual dropout applies.
- The content bias rides along as a (Q+1)-th query/key dim (query 1, key x_j . c_h), and
  q, k, v are zero-padded to one head dim, so the whole map is one fused
  scaled_dot_product_attention call, O(T) memory where SDPA's
  fused kernels apply.
- Causal: the standard causal mask; key padding: padded keys are masked out of the softmax.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from trainers.layers import BatchedLinear, residual_init_std


class CollaborativeAttention(nn.Module):
    """x [P, B, T, D] -> attention output [P, B, T, D] (before the block's residual)."""

    supports_causal = True

    def __init__(self, config, *, members: int, causal: bool, layer: int = 0):
        super().__init__()
        options, d_model, heads = config.attention, config.d_model, config.n_heads
        if options.key_dim > d_model:
            raise ValueError(f"key_dim ({options.key_dim}) must be at most d_model ({d_model})")
        self.causal, self.heads, self.key_dim = causal, heads, options.key_dim
        self.query_key = BatchedLinear(members, d_model, 2 * options.key_dim, bias=False)
        self.content_bias = BatchedLinear(members, d_model, heads, bias=False)
        self.mixing_PHQ = nn.Parameter(mixing_init(options.mixing_init, members, heads, options.key_dim))
        self.value = BatchedLinear(members, d_model, d_model)
        self.proj = BatchedLinear(members, d_model, d_model, init_std=residual_init_std(config.n_layers))

    def forward(self, x_PBTD: torch.Tensor, key_mask_PBT: torch.Tensor | None = None) -> torch.Tensor:
        P, B, T, D = x_PBTD.shape
        H = self.heads
        q_PBTQ, k_PBTQ = self.query_key(x_PBTD).chunk(2, dim=-1)
        # Each head's query is the shared one reweighted by its mixing vector, and the
        # content bias rides along as one more dim (query 1, key x_j . c_h), so one fused
        # SDPA call computes both terms: [P, B, H, T, Q + 1].
        q_PBHTQ = q_PBTQ.unsqueeze(2) * self.mixing_PHQ.view(P, 1, H, 1, -1)
        q_PBHTQ = F.pad(q_PBHTQ, (0, 1), value=1.0)
        bias_PBHT1 = self.content_bias(x_PBTD).transpose(-2, -1).unsqueeze(-1)
        k_PBHTQ = torch.cat([k_PBTQ.unsqueeze(2).expand(P, B, H, T, -1), bias_PBHT1], dim=-1)
        v_PBHTK = self.value(x_PBTD).view(P, B, T, H, D // H).transpose(2, 3)
        # SDPA's fused kernels need one head dim for q, k and v (else it falls back to its
        # math path, a T x T matrix per head: 12 GB at 16K tokens here): pad the shorter side
        # with zeros. A zero query/key dim adds nothing to a score; a zero value dim is dropped.
        width = max(self.key_dim + 1, D // H)
        q_NHTE, k_NHTE, v_NHTE = (F.pad(x.flatten(0, 1), (0, width - x.shape[-1]))
                                  for x in (q_PBHTQ, k_PBHTQ, v_PBHTK))
        out_NHTE = F.scaled_dot_product_attention(q_NHTE, k_NHTE, v_NHTE, **self.masking(key_mask_PBT, T),
                                                  scale=1.0 / math.sqrt(self.key_dim / H))
        out_NHTK = out_NHTE[..., :D // H]
        return self.proj(out_NHTK.reshape(P, B, H, T, D // H).transpose(2, 3).reshape(P, B, T, D))

    def masking(self, key_mask_PBT: torch.Tensor | None, length: int) -> dict:
        """SDPA's mask arguments: is_causal alone when nothing is padded (the fused path),
        else one boolean [N, 1, 1 or T, T] mask, True where a query may see a key."""
        if key_mask_PBT is None:
            return {"is_causal": self.causal}
        allowed_N1xT = key_mask_PBT.flatten(0, 1)[:, None, None, :]
        if self.causal:
            allowed_N1xT = allowed_N1xT & torch.ones(length, length, dtype=torch.bool,
                                                     device=key_mask_PBT.device).tril()
        return {"attn_mask": allowed_N1xT}


def mixing_init(kind: str, members: int, heads: int, key_dim: int) -> torch.Tensor:
    """[P, H, Q]: 'uniform' draws each member's own matrix, the others are fixed patterns."""
    if kind == "uniform":
        return torch.randn(members, heads, key_dim) * 0.2
    if kind == "all_ones":
        return torch.ones(members, heads, key_dim)
    mixing_PHQ = torch.zeros(members, heads, key_dim)
    per_head = math.ceil(key_dim / heads)
    for h in range(heads):
        mixing_PHQ[:, h, h * per_head:(h + 1) * per_head] = 1.0
    return mixing_PHQ
