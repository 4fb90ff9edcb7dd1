"""LARA: linear randomized attention (Zheng, Wang, Kong, ICML 2022). Bidirectional only.

Legend: N = P*B folded batch, H heads, T tokens, K head dim, C proposals (= landmarks).

With q' = q / K^(1/4), k' = k / K^(1/4) (so q'.k' = q.k / sqrt(K)) and the positive
random feature xi(x, w) = exp(w.x - |x|^2/2), exact softmax attention for query n is
  out_n = E_{w ~ p_n}[f(w)],   f(w) = sum_m xi(k'_m, w) v_m / sum_m xi(k'_m, w),
  p_n(w) = sum_m softmax_m(q'_n.k'_m) N(w; q'_n + k'_m, I)
         ∝ N(w; 0, I) xi(q'_n, w) sum_m xi(k'_m, w).
Sampling p_n per query (randomized attention) is unbiased but quadratic. LARA draws one
sample w_c from each of C query-independent proposals N(mu_c, I), mu_c = (mean query +
mean key) of segment c, and mixes them by self-normalized multiple importance sampling:
  out_n = sum_c softmax_c[log alpha_nc + log xi(q'_n, w_c) + logsumexp_m log xi(k'_m, w_c)
                          - log xi(mu_c, w_c)] f(w_c)
(the last three terms are log p_n(w_c) / N(w_c; mu_c, I) up to a constant per query).
alpha_nc are the reference's "mis-opt" weights: the balance heuristic
N(w_c; mu_c) / sum_c' N(w_c; mu_c') plus alpha_coeff * (t_nc - mean_c t_nc), with
t_nc = softmax over queries n (as in the reference code) of q'_n . (mean query of
segment c). f(w_c) needs no query, so the cost is O(T C K). Training draws w_c from a
private generator keyed by (seed, layer, call); eval uses w_c = mu_c, so evaluation is
deterministic. The proposals have unit variance as in the paper (the reference code's
samples are effectively narrower, by K^(-1/4), than the density it weights them with).

The landmark means are plain segment means (the reference's parameter-free pooling), so
the kernel has no weights of its own.

Numerics: computed in fp32 and cast back; everything stays in log space (logsumexp and
softmax only, no raw exponentials), so nothing overflows whatever the logit scale.
"""
import torch
import torch.nn.functional as F
from torch import nn

from trainers.attention.config import LaraAttentionConfig
from trainers.attention.seeding import TrainingCalls, seeded_generator


def segment_means(x_NHTK: torch.Tensor, segments: int) -> torch.Tensor:
    """[N, H, T, K] -> [N, H, C, K]: means of C contiguous segments (uneven when C does not divide T)."""
    N, H, T, K = x_NHTK.shape
    pooled_XKC = F.adaptive_avg_pool1d(x_NHTK.transpose(-2, -1).reshape(N * H, K, T), segments)
    return pooled_XKC.view(N, H, K, segments).transpose(-2, -1)


def log_xi(x_NHTK: torch.Tensor, w_NHCK: torch.Tensor) -> torch.Tensor:
    """log xi(x_t, w_c) = w_c . x_t - |x_t|^2 / 2, as [N, H, C, T]."""
    return w_NHCK @ x_NHTK.transpose(-2, -1) - 0.5 * (x_NHTK ** 2).sum(-1).unsqueeze(-2)


class LaraAttention(nn.Module):
    supports_causal = False

    def __init__(self, config: LaraAttentionConfig, *, head_dim: int, causal: bool, layer: int = 0):
        super().__init__()
        if causal:
            raise ValueError("attention kind 'lara' has no causal form; for a causal model use "
                             "'linear', 'performer', 'flash' or 'softmax'")
        self.config = config
        self.layer = layer
        self.head_dim = head_dim
        self.training_calls = TrainingCalls()

    def _proposal_samples(self, mu_NHCK: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return mu_NHCK
        generator = seeded_generator(self.config.seed, self.layer, self.training_calls.tick())
        return mu_NHCK + torch.randn(mu_NHCK.shape, generator=generator).to(mu_NHCK.device)

    def forward(self, q_NHTK: torch.Tensor, k_NHTK: torch.Tensor, v_NHTK: torch.Tensor) -> torch.Tensor:
        scale = self.head_dim ** -0.25
        q_NHTK, k_NHTK = q_NHTK.float() * scale, k_NHTK.float() * scale
        q_bar_NHCK = segment_means(q_NHTK, self.config.num_landmarks)
        mu_NHCK = q_bar_NHCK + segment_means(k_NHTK, self.config.num_landmarks)
        w_NHCK = self._proposal_samples(mu_NHCK)

        log_xi_k_NHCT = log_xi(k_NHTK, w_NHCK)
        f_NHCK = torch.softmax(log_xi_k_NHCT, dim=-1) @ v_NHTK.float()

        log_xi_mu_NHCC = log_xi(mu_NHCK, w_NHCK)  # [sample c, proposal c']
        log_proposal_NHC1 = log_xi_mu_NHCC.diagonal(dim1=-2, dim2=-1).unsqueeze(-1)
        balance_NHC1 = torch.softmax(log_xi_mu_NHCC, dim=-1).diagonal(dim1=-2, dim2=-1).unsqueeze(-1)
        t_NHCT = torch.softmax(q_bar_NHCK @ q_NHTK.transpose(-2, -1), dim=-1)
        alpha_NHCT = balance_NHC1 + self.config.alpha_coeff * (t_NHCT - t_NHCT.mean(-2, keepdim=True))

        log_weight_NHCT = (torch.log(alpha_NHCT.clamp_min(1e-8)) + log_xi(q_NHTK, w_NHCK)
                           + torch.logsumexp(log_xi_k_NHCT, dim=-1, keepdim=True) - log_proposal_NHC1)
        out_NHTK = torch.softmax(log_weight_NHCT, dim=-2).transpose(-2, -1) @ f_NHCK
        return out_NHTK.to(v_NHTK.dtype)
