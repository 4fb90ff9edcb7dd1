"""Performer / FAVOR+ (Choromanski et al. 2021): positive orthogonal random features.

Legend: N = P*B folded batch, H heads, T tokens, K head dim, M random features.

exp(q.k / sqrt(K)) = E_w[phi(q') phi(k')] for w ~ N(0, I_K), q' = q / K^(1/4), with the
positive features phi(x)_m = exp(w_m . x - |x|^2 / 2). M orthogonal rows w_m (blocks of a
random orthogonal matrix, rows rescaled to Gaussian norms) lower the variance. Then
attention is linear attention with phi (chunked prefix sums when causal).

The projection [M, K] is a buffer shared by all members and heads of a layer. It is drawn
from a private generator keyed by (seed, layer, redraw count), so every data-parallel
worker holds the same one, and redrawn every `redraw_interval` training forward passes.

Numerics: computed in fp32 and cast back (exp overflows fp16 long before fp32). Before
exp a max is subtracted: per query row (a per-query factor cancels in the ratio), and
over all real (non-padding) keys of a sequence and head (a common factor of numerator and
normalizer; padded keys get logit -inf, so features exactly 0). The
key max spans the whole sequence, so in the causal form earlier outputs depend on later
keys only through rounding, as in the reference implementations; it is detached because
the output does not depend on it. The normalizer is clamped at the smallest normal float.
"""
import math

import torch
from torch import nn

from trainers.attention.chunked import feature_map_attention
from trainers.attention.config import PerformerAttentionConfig
from trainers.attention.seeding import TrainingCalls, seeded_generator


def orthogonal_gaussian_rows(num_rows: int, dim: int, generator: torch.Generator) -> torch.Tensor:
    """[num_rows, dim]: rows orthogonal within each block of `dim`, each row's norm that of
    a standard Gaussian vector, so every row is marginally N(0, I)."""
    blocks = []
    for _ in range(math.ceil(num_rows / dim)):
        q, r = torch.linalg.qr(torch.randn(dim, dim, generator=generator))
        # Fixing the signs by diag(r) makes q Haar-distributed (plain QR output is not).
        blocks.append((q * torch.sign(torch.diagonal(r))).T)
    norms = torch.randn(num_rows, dim, generator=generator).norm(dim=1, keepdim=True)
    return torch.cat(blocks)[:num_rows] * norms


class PerformerAttention(nn.Module):
    supports_causal = True

    def __init__(self, config: PerformerAttentionConfig, *, members: int, head_dim: int, causal: bool,
                 layer: int = 0):
        super().__init__()
        self.causal = causal
        self.config = config
        self.layer = layer
        self.head_dim = head_dim
        self.register_buffer("projection_MK", self._draw(0))
        self.training_calls = TrainingCalls()

    def _draw(self, redraw: int) -> torch.Tensor:
        generator = seeded_generator(self.config.seed, self.layer, redraw)
        return orthogonal_gaussian_rows(self.config.nb_features, self.head_dim, generator)

    def _features(self, x_NHTK: torch.Tensor, *, key_mask_NT: torch.Tensor | None = None,
                  is_query: bool) -> torch.Tensor:
        x_NHTK = x_NHTK.float() * self.head_dim ** -0.25
        logit_NHTM = x_NHTK @ self.projection_MK.float().T - 0.5 * (x_NHTK ** 2).sum(-1, keepdim=True)
        if key_mask_NT is not None:
            # -inf before exp: padded keys get features exactly 0 (and no gradient), and
            # the key max below is taken over real keys only, so it ignores the padding.
            logit_NHTM = logit_NHTM.masked_fill(~key_mask_NT[:, None, :, None], float("-inf"))
        stabilizer = logit_NHTM.amax(dim=-1 if is_query else (-2, -1), keepdim=True).detach()
        # The usual 1/sqrt(M) factor cancels between numerator and normalizer, so it is left out.
        return torch.exp(logit_NHTM - stabilizer)

    def forward(self, q_NHTK: torch.Tensor, k_NHTK: torch.Tensor, v_NHTK: torch.Tensor,
                key_mask_NT: torch.Tensor | None = None) -> torch.Tensor:
        interval = self.config.redraw_interval
        if self.training and interval:
            call = self.training_calls.tick()
            if call and call % interval == 0:
                self.projection_MK.copy_(self._draw(call // interval))
        phi_q_NHTM = self._features(q_NHTK, is_query=True)
        phi_k_NHTM = self._features(k_NHTK, key_mask_NT=key_mask_NT, is_query=False)  # 0 at padding
        out_NHTK = feature_map_attention(phi_q_NHTM, phi_k_NHTM, v_NHTK.float(), causal=self.causal,
                                         chunk_size=self.config.chunk_size, eps=torch.finfo(torch.float32).tiny)
        return out_NHTK.to(v_NHTK.dtype)
