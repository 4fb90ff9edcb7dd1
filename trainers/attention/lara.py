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

Landmarks: the real (non-padding) tokens are split, in order, into C disjoint contiguous
segments, as the reference's parameter-free pooling does: with n real tokens and
s = n // C, the first (s + 1) C - n segments hold s tokens and the rest s + 1 (all s when
C divides n). When n < C the first C - n segments are empty: their proposals get zero
weight everywhere (the reference then uses the n tokens themselves, which is the same).
Segment means average real tokens only, so padding moves no landmark, and the kernel has
no weights of its own.

Padding (key_mask_NT): padded keys get log xi = -inf, so they add nothing to f(w_c) or to
its normalizer; padded queries are left out of t_nc's softmax over queries (the
reference instead zeroes q, k, v at padding and lets them in).

Numerics: computed in fp32 and cast back; everything stays in log space (logsumexp and
softmax only, no raw exponentials), so nothing overflows whatever the logit scale.
"""
import torch
from torch import nn

from trainers.attention.config import LaraAttentionConfig
from trainers.attention.seeding import TrainingCalls, seeded_generator


def segment_averages(real_NT: torch.Tensor, segments: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Weights [N, C, T] whose row c averages the real tokens of segment c (see the module
    docstring), and which segments are non-empty, [N, C]."""
    rank_NT = real_NT.cumsum(-1) - 1  # index among the real tokens
    n_N1 = real_NT.sum(-1, keepdim=True)
    short_N1 = n_N1 // segments  # s: tokens in each of the first (s + 1) C - n segments
    n_short_N1 = (short_N1 + 1) * segments - n_N1
    in_short_N1 = n_short_N1 * short_N1  # tokens covered by the short segments
    segment_NT = torch.where(rank_NT < in_short_N1, rank_NT // short_N1.clamp_min(1),
                             n_short_N1 + (rank_NT - in_short_N1) // (short_N1 + 1))
    segment_NT = segment_NT.masked_fill(~real_NT, segments)  # padding: in no segment
    member_NTC = (segment_NT.unsqueeze(-1) == torch.arange(segments, device=real_NT.device)).float()
    count_N1C = member_NTC.sum(-2, keepdim=True)
    return (member_NTC / count_N1C.clamp_min(1)).transpose(-2, -1), count_N1C.squeeze(-2) > 0


def log_xi(x_NHTK: torch.Tensor, w_NHCK: torch.Tensor) -> torch.Tensor:
    """log xi(x_t, w_c) = w_c . x_t - |x_t|^2 / 2, as [N, H, C, T]."""
    return w_NHCK @ x_NHTK.transpose(-2, -1) - 0.5 * (x_NHTK ** 2).sum(-1).unsqueeze(-2)


class LaraAttention(nn.Module):
    supports_causal = False

    def __init__(self, config: LaraAttentionConfig, *, members: int, head_dim: int, causal: bool,
                 layer: int = 0):
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

    def forward(self, q_NHTK: torch.Tensor, k_NHTK: torch.Tensor, v_NHTK: torch.Tensor,
                key_mask_NT: torch.Tensor | None = None) -> torch.Tensor:
        real_NT = (key_mask_NT if key_mask_NT is not None  # [1, T] without padding: the same for every row
                   else torch.ones(1, q_NHTK.shape[-2], dtype=torch.bool, device=q_NHTK.device))
        scale = self.head_dim ** -0.25
        q_NHTK, k_NHTK = q_NHTK.float() * scale, k_NHTK.float() * scale
        average_NCT, nonempty_NC = segment_averages(real_NT, self.config.num_landmarks)
        pad_N11T, empty_N1C1 = ~real_NT[:, None, None, :], ~nonempty_NC[:, None, :, None]
        q_bar_NHCK = average_NCT.unsqueeze(1) @ q_NHTK
        mu_NHCK = q_bar_NHCK + average_NCT.unsqueeze(1) @ k_NHTK
        w_NHCK = self._proposal_samples(mu_NHCK)

        log_xi_k_NHCT = log_xi(k_NHTK, w_NHCK).masked_fill(pad_N11T, -torch.inf)
        f_NHCK = torch.softmax(log_xi_k_NHCT, dim=-1) @ v_NHTK.float()

        log_xi_mu_NHCC = log_xi(mu_NHCK, w_NHCK)  # [sample c, proposal c']
        log_proposal_NHC1 = log_xi_mu_NHCC.diagonal(dim1=-2, dim2=-1).unsqueeze(-1)
        # The balance heuristic mixes the non-empty proposals only.
        balance_NHCC = torch.softmax(log_xi_mu_NHCC.masked_fill(empty_N1C1.transpose(-2, -1), -torch.inf), dim=-1)
        balance_NHC1 = balance_NHCC.diagonal(dim1=-2, dim2=-1).unsqueeze(-1)
        t_NHCT = torch.softmax((q_bar_NHCK @ q_NHTK.transpose(-2, -1)).masked_fill(pad_N11T, -torch.inf), dim=-1)
        t_mean_NH1T = (t_NHCT.masked_fill(empty_N1C1, 0).sum(-2, keepdim=True)
                       / nonempty_NC.sum(-1)[:, None, None, None])  # over the non-empty proposals
        alpha_NHCT = balance_NHC1 + self.config.alpha_coeff * (t_NHCT - t_mean_NH1T)

        log_weight_NHCT = (torch.log(alpha_NHCT.clamp_min(1e-8)) + log_xi(q_NHTK, w_NHCK)
                           + torch.logsumexp(log_xi_k_NHCT, dim=-1, keepdim=True) - log_proposal_NHC1)
        weight_NHCT = torch.softmax(log_weight_NHCT.masked_fill(empty_N1C1, -torch.inf), dim=-2)
        return (weight_NHCT.transpose(-2, -1) @ f_NHCK).to(v_NHTK.dtype)
