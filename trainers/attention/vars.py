"""VARS-D (Shi et al., ICML 2022, "Visual Attention Emerges from Recurrent Sparse
Reconstruction"): attention as a few unrolled steps of sparse reconstruction. Bidirectional.

Legend: P members, B sequences per member, N = P*B, H heads, T tokens, K head dim,
M = feature_ratio * K random features.

What the reference (bfshi/VARS, `vars_block.py`, class VARS_D) computes, in our words:
  1. Positive random features of the unit-normalised queries: with q^ = q / |q| and a fixed
     Gaussian projection w_1..w_M ~ N(0, I_K),
         phi_tm = exp(q^_t . w_m - |q^_t|^2 / 2) / sqrt(M)            (Performer's features)
  2. Each feature column normalised to unit length over the tokens of the sequence:
         Phi = phi / ||phi_{:,m}||_2,   so G = Phi^T Phi [M, M] has a unit diagonal.
     (The constant factors of step 1 cancel here; only exp(q^ . w_m) matters.)
  3. Sparse reconstruction of the values from the dictionary Phi: with u = Phi^T V [M, K],
     a few ISTA steps on  1/2 ||V - Phi x||^2 + lam ||x||_1:
         x <- shrink(u, lam')                                   (the first step from x = 0,
                                                                 threshold lam', not lam'/L')
         repeat num_steps times:
             x <- x - (G' x - u) / L'
             x <- shrink(x, lam' / L')
     with L = max_m sum_m' |G_mm'| + 1 (a Gershgorin bound on G's largest eigenvalue, plus
     one; no gradient), and three learned scale factors per member: a matrix A [M, M]
     (init I) with G' = A G A (A on both sides, as in the reference, not A^T G A), lam' =
     s_lam * lam and L' = L / s_L (s_lam, s_L init 1).
  4. out = Phi x: the reconstruction of V from the sparse code x.
  shrink: the reference's GELU-based shrink sign(z) * gelu(|z| - theta) (`shrink: gelu`, a
  smooth soft-threshold that lets small negative values through), or the plain soft
  threshold sign(z) * relu(|z| - theta) (`shrink: soft`). With `soft` and A = I, s = 1:
    - num_steps = 0, lam = 0:  out = Phi Phi^T V, Phi the column-normalised features of 2;
    - lam = 0, many steps:     ISTA is gradient descent on the least-squares term (step
      1/L <= 1/||G||), so out -> Phi (Phi^T Phi)^+ Phi^T V, V projected onto the span of
      Phi's columns (exactly, in float64, when Phi has full column rank, M <= T);
    - lam large:               every shrink returns 0, so out = 0.
  (With `gelu`, sign(u) gelu(|u|) != u: the GELU shrink is not the identity at lam = 0.)

Choices the reference or the paper leave open, or where this kind departs from them:
- `dictionary: queries` (default) builds Phi from the queries alone, keys tied to queries,
  as in the reference (whose block projects only q and v); the model's key projection is
  then unused and its third of the qkv weight gets zero gradient (the model's interface
  gives every kernel q, k and v). `dictionary: keys` is our extension that uses it: the
  dictionary Phi_k comes from the keys (G = Phi_k^T Phi_k, u = Phi_k^T V) and the queries
  read the code out, out = Phi_q x, both feature maps as in 1-2. With q = k the two agree;
  the limits above hold with Phi_q in front (0 steps: Phi_q Phi_k^T V).
- The projection [M, K] is one for all heads and members of a layer (the reference draws one
  per head; the kernel interface does not pass the head count), drawn from a private
  generator keyed by (seed, layer), so every data-parallel worker holds the same one, and
  never redrawn (the reference's is a fixed, non-trainable parameter). Plain Gaussian rows,
  not orthogonalised, as in the reference. It is a buffer shared by the group's members.
- The reference's q * K^(-1/4) scaling before the unit normalisation is dropped: it
  cancels.
- Learned factors are per member (leading axis P): A [P, M, M], s_lam [P, 1], s_L [P, 1], shared
  by the layer's heads as the reference shares them. Nothing keeps s_L positive (nor does
  the reference).
- Key padding (key_mask_NT): a padded token's feature row is zeroed before the column
  normalisation, so padding adds nothing to G, u or the norms, and its output row is 0.
- Numerics: computed in fp32 (fp64 inputs stay fp64) and cast back. Before exp the
  largest logit of each feature column over the real tokens is subtracted (detached): a
  per-column factor that the column normalisation removes exactly.
Cost: O(T M K) for the features, G and u, O(T M K) for the output, and num_steps M^2 K
for the iterations: linear in T.
"""
import torch
import torch.nn.functional as F
from torch import nn

from trainers.attention.config import VarsAttentionConfig
from trainers.attention.seeding import seeded_generator


def shrink(z: torch.Tensor, threshold: torch.Tensor, kind: str) -> torch.Tensor:
    """sign(z) * act(|z| - threshold), act = gelu (the reference's) or relu (soft threshold)."""
    excess = z.abs() - threshold
    return torch.sign(z) * (F.gelu(excess) if kind == "gelu" else F.relu(excess))


def column_normalised_features(q_NHTK: torch.Tensor, projection_MK: torch.Tensor,
                               key_mask_NT: torch.Tensor | None) -> torch.Tensor:
    """Phi [N, H, T, M]: positive random features of q / |q|, each column of unit norm over
    the real tokens; zero rows at padding."""
    logit_NHTM = F.normalize(q_NHTK, dim=-1) @ projection_MK.T
    if key_mask_NT is not None:
        logit_NHTM = logit_NHTM.masked_fill(~key_mask_NT[:, None, :, None], float("-inf"))
    # exp(q^.w - 1/2) / sqrt(M) up to a per-column factor, which the normalisation removes.
    phi_NHTM = torch.exp(logit_NHTM - logit_NHTM.amax(dim=-2, keepdim=True).detach())
    return F.normalize(phi_NHTM, dim=-2)


class VarsAttention(nn.Module):
    supports_causal = False

    def __init__(self, config: VarsAttentionConfig, *, members: int, head_dim: int, causal: bool,
                 layer: int = 0):
        super().__init__()
        if causal:
            raise ValueError("attention kind 'vars' has no causal form (its dictionary spans the whole "
                             "sequence); for a causal model use 'linear', 'performer', 'flash' or 'softmax'")
        self.config = config
        features = config.feature_ratio * head_dim
        generator = seeded_generator(config.seed, layer)
        self.register_buffer("projection_MK", torch.randn(features, head_dim, generator=generator))
        self.mix_PMM = nn.Parameter(torch.eye(features).repeat(members, 1, 1))  # A, init I
        # [P, 1], not [P]: every parameter of the model has a feature axis after the member
        # axis (per-member clipping, the optimizer and the exchange flatten from axis 1).
        self.lam_scale_P1 = nn.Parameter(torch.ones(members, 1))  # s_lam
        self.step_scale_P1 = nn.Parameter(torch.ones(members, 1))  # s_L

    def forward(self, q_NHTK: torch.Tensor, k_NHTK: torch.Tensor, v_NHTK: torch.Tensor,
                key_mask_NT: torch.Tensor | None = None) -> torch.Tensor:
        dtype = torch.promote_types(v_NHTK.dtype, torch.float32)  # fp32 math; fp64 stays fp64
        projection_MK = self.projection_MK.to(dtype)
        phi_q_NHTM = column_normalised_features(q_NHTK.to(dtype), projection_MK, key_mask_NT)
        phi_k_NHTM = (phi_q_NHTM if self.config.dictionary == "queries"
                      else column_normalised_features(k_NHTK.to(dtype), projection_MK, key_mask_NT))
        gram_NHMM = phi_k_NHTM.transpose(-2, -1) @ phi_k_NHTM
        u_NHMK = phi_k_NHTM.transpose(-2, -1) @ v_NHTK.to(dtype)
        code_NHMK = self.sparse_code(gram_NHMM, u_NHMK)
        return (phi_q_NHTM @ code_NHMK).to(v_NHTK.dtype)

    def sparse_code(self, gram_NHMM: torch.Tensor, u_NHMK: torch.Tensor) -> torch.Tensor:
        """x [N, H, M, K] after the first shrink and num_steps ISTA steps (module docstring, 3)."""
        P = self.mix_PMM.shape[0]
        N, H, M, K = u_NHMK.shape
        dtype = u_NHMK.dtype
        # Members: N = P*B member-major, so a view [P, B, ...] lines each row up with its member.
        gram_PBHMM = gram_NHMM.view(P, N // P, H, M, M)
        bound_PBH11 = gram_PBHMM.abs().sum(-1).amax(-1).detach()[..., None, None] + 1.0
        mix_P11MM = self.mix_PMM.to(dtype).view(P, 1, 1, M, M)
        learned_gram_PBHMM = mix_P11MM @ gram_PBHMM @ mix_P11MM
        step_PBH11 = bound_PBH11 / self.step_scale_P1.to(dtype).view(P, 1, 1, 1, 1)
        lam_P1111 = (self.lam_scale_P1.to(dtype) * self.config.lam).view(P, 1, 1, 1, 1)
        u_PBHMK = u_NHMK.view(P, N // P, H, M, K)
        x_PBHMK = shrink(u_PBHMK, lam_P1111, self.config.shrink)
        for _ in range(self.config.num_steps):
            x_PBHMK = x_PBHMK - (learned_gram_PBHMM @ x_PBHMK - u_PBHMK) / step_PBH11
            x_PBHMK = shrink(x_PBHMK, lam_P1111 / step_PBH11, self.config.shrink)
        return x_PBHMK.view(N, H, M, K)
