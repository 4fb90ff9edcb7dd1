"""Ripple attention (Zheng, Pan, Kong, ICML 2022, "Ripple Attention for Visual Perception
with Sub-quadratic Complexity"). No public code exists; this follows the paper and says
below what it leaves open.

Legend: P members, B images per member, N = P*B (member-major), H heads, T = Y*X tokens
on the grid (Y rows, X columns, read row by row), K head dim, M = K feature dims of phi,
C features per summed-area-table pass, J = K + 1 (v with a ones column), R rings.

Linear attention (phi(x) = elu(x) + 1, the `linear` kind's feature map) in which key j's
contribution to query i is weighted by their distance on the grid: the keys around a query
fall into rings ("vicinal groups") r = max(|row_i - row_j|, |col_i - col_j|) (Chebyshev
distance: ring 0 is the query's own token, ring r the border of the (2r+1) x (2r+1) square
around it), ring r < R gets the weight alpha_r and every key beyond gets one shared weight:
  out_i = sum_j w_i(ring(i, j)) phi(q_i).phi(k_j) v_j / sum_j w_i(ring(i, j)) phi(q_i).phi(k_j)
The weights come from a stick-breaking transform, so nearer rings take their share first:
  alpha_r = beta_r prod_(s<r) (1 - beta_s) for r < R,  alpha_far = prod_(s<R) (1 - beta_s),
which sum to 1 over the R rings and the far field.

Sub-quadratic by summed-area tables. With a_j = phi(k_j) [v_j, 1]^T and S the table of a over
the grid, the sum of a over any rectangle is 4 lookups in S. Let Box_r(i) be the sum over the
square of radius r around i (clipped to the image) and Box_inf the whole image; then ring r's
sum is Box_r - Box_(r-1) and, telescoping,
  state_i = sum_j w_i(ring(i, j)) a_j = sum_(r<R) (alpha_r - alpha_(r+1)) Box_r(i) + alpha_far Box_inf
(alpha_R := alpha_far), and out_i = phi(q_i)^T state_i[:, :K] / phi(q_i)^T state_i[:, K].
This is the paper's dynamic programming over rings: O(T R M J) time, linear in T for a
fixed R and O(T^1.5) when every ring of a square image has its own weight (R = Y = X),
against softmax's O(T^2 K); memory O(T C J) per pass.

Choices the paper leaves open (or that the kernel interface decides):
- Rings are Chebyshev (square) rings, the shape summed-area tables give in O(1); R (spec:
  `rings`) is set directly, where the paper derives its threshold ring from tau.
- beta depends on the query (`query_dependent`, default): beta_r(i) = sigmoid(b_r + w_r .
  q_i / sqrt(K)), so each token chooses how local to look; w starts at zero, so training
  starts from query-independent weights. With `query_dependent: false`, beta_r = sigmoid(b_r).
- b starts at the uniform stick: beta_r = 1 / (R + 1 - r), so alpha_r = alpha_far = 1/(R+1)
  at init (no ring preferred; per key, a near ring's share is split among fewer keys, so
  the init is already local).
- The weights are per member ([P, 1, R] bias, [P, K, R] query weights) and shared by the
  heads (the paper does not say; rpe_fft's tables are per head, through heads.py, and these
  could be too). With query dependence each head still gets its own weights, from its own
  queries.
- Normalisation: the ring weights multiply the kernel scores before the row is normalised
  (the paper's ratio of weighted sums), so only the weights' ratios matter; all weights equal
  (e.g. all one) is exactly linear attention.
- Key padding: a padded key's phi(k) is zeroed, so it adds nothing to any box or the far field.
- The sequence must be the image read row by row: T = Y*X, else ValueError. Bidirectional
  only (a ring surrounds the query; the paper has no causal form).
- Precision: a box sum is a difference of prefix sums over up to T keys, so the tables run in
  float64 by default (`table_dtype`), as rpe_fft's FFTs do; the rest in fp32.
- Memory: a pass over C = `feature_chunk` features of phi builds a [N, H, Y+1, X+1, C*J] table;
  backward keeps the tables, O(T M J) numbers in all (rpe_fft's FFTs keep as much), and
  recomputes each ring's box from them (`_RingSums`, a hand-written backward), so one ring's
  box is alive at a time instead of R.
- Speed: every ring reads and writes table-sized tensors of T M J numbers, so a step costs
  about R times linear attention's state work, in float64 by default; on this CPU that is
  seconds per layer at 32x32 with K = 64 (README), far slower than SDPA at these sizes.
- Small grids: `form: dense` computes the same weighted sums as a T x T matrix of ring
  weights times the kernel scores (O(T^2 K), no prefix sums, so fp32 throughout). Kernel
  alone, forward + backward, K = 16, 4 heads, one thread: 37 ms against the tables' 7.8 s
  at 8x8 (128 images), 0.37 s against 5.5 s at 16x16 (32 images), 0.76 s against 1.4 s at
  32x32 (4 images), where the T x T matrices already take N H T^2 numbers. `auto` (the
  default) takes it up to DENSE_MAX_TOKENS tokens.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from trainers.attention.config import RippleAttentionConfig
from trainers.attention.grid import grid_shape
from trainers.attention.linear import elu_feature_map

DENSE_MAX_TOKENS = 256  # form auto: a 16x16 grid, where the dense form was 15x faster and its T x T weights small


class RippleAttention(nn.Module):
    supports_causal = False
    uses_grid = True
    requires_grid = True

    def __init__(self, config: RippleAttentionConfig, *, members: int, head_dim: int, causal: bool,
                 layer: int = 0, grid: tuple[int, int] | None = None):
        super().__init__()
        if causal:
            raise ValueError("ripple attention is bidirectional only (rings surround the query)")
        if grid is None:
            raise ValueError("ripple attention needs the task's grid (H, W)")
        self.grid, self.members, self.rings = grid, members, config.rings
        self.feature_chunk, self.form = config.feature_chunk, config.form
        self.table_dtype = getattr(torch, config.table_dtype)
        # Uniform stick at init: beta_r = 1 / (R + 1 - r), i.e. logit -log(R - r).
        uniform_logit_R = -torch.log(torch.arange(config.rings, 0, -1, dtype=torch.float32))
        self.beta_bias_P1R = nn.Parameter(uniform_logit_R.repeat(members, 1, 1))
        self.beta_query_PKR = (nn.Parameter(torch.zeros(members, head_dim, config.rings))
                               if config.query_dependent else None)

    def forward(self, q_NHTK: torch.Tensor, k_NHTK: torch.Tensor, v_NHTK: torch.Tensor,
                key_mask_NT: torch.Tensor | None = None) -> torch.Tensor:
        grid = grid_shape(self.grid, q_NHTK.shape[-2], "ripple")
        dtype = torch.promote_types(v_NHTK.dtype, torch.float32)  # fp32 math; fp64 stays fp64
        weights_NHTW = self.ring_weights(q_NHTK.to(dtype))
        if self.form == "dense" or (self.form == "auto" and q_NHTK.shape[-2] <= DENSE_MAX_TOKENS):
            return dense_ripple_attention(q_NHTK, k_NHTK, v_NHTK, weights_NHTW, grid=grid, key_mask_NT=key_mask_NT)
        return ripple_attention(q_NHTK, k_NHTK, v_NHTK, weights_NHTW, grid=grid, key_mask_NT=key_mask_NT,
                                feature_chunk=self.feature_chunk, table_dtype=self.table_dtype)

    def ring_weights(self, q_NHTK: torch.Tensor) -> torch.Tensor:
        """[alpha_0 .. alpha_(R-1), alpha_far] per query by stick-breaking: [N, H, T, R + 1]."""
        N, H, T, K = q_NHTK.shape
        logit_PBHTR = self.beta_bias_P1R.to(q_NHTK.dtype).view(self.members, 1, 1, 1, self.rings)
        if self.beta_query_PKR is not None:
            q_PBHTK = q_NHTK.view(self.members, N // self.members, H, T, K)
            logit_PBHTR = logit_PBHTR + torch.einsum("pbhtk,pkr->pbhtr", q_PBHTK,
                                                     self.beta_query_PKR.to(q_NHTK.dtype)) / math.sqrt(K)
        # log beta_r and log(1 - beta_r); the stick left before ring r is the exclusive cumsum.
        log_keep_PBHTR = F.logsigmoid(-logit_PBHTR)
        log_left_PBHTW = F.pad(log_keep_PBHTR.cumsum(-1), (1, 0))
        log_alpha_PBHTW = torch.cat([F.logsigmoid(logit_PBHTR), torch.zeros_like(logit_PBHTR[..., :1])], -1)
        weights_PBHTW = (log_alpha_PBHTW + log_left_PBHTW).exp()
        return weights_PBHTW.expand(self.members, N // self.members, H, T, self.rings + 1).reshape(N, H, T, -1)


def ripple_attention(q_NHTK: torch.Tensor, k_NHTK: torch.Tensor, v_NHTK: torch.Tensor, weights_NHTW: torch.Tensor,
                     *, grid: tuple[int, int], key_mask_NT: torch.Tensor | None = None, feature_chunk: int = 8,
                     table_dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Ring-weighted linear attention on the grid (Y, X), T = Y*X: weights_NHTW holds each
    query's weights of rings 0 .. R-1 and of the far field (W = R + 1 entries)."""
    dtype = torch.promote_types(v_NHTK.dtype, torch.float32)
    phi_q_NHTM, phi_k_NHTM = _features(q_NHTK, k_NHTK, key_mask_NT, dtype)
    v_NHTJ = F.pad(v_NHTK.to(dtype), (0, 1), value=1.0)  # the ones column carries the normaliser
    # Telescoped coefficients of Box_0 .. Box_(R-1), Box_inf (see the module docstring).
    weights_NHTW = weights_NHTW.to(dtype)
    coef_NHTW = torch.cat([weights_NHTW[..., :-1] - weights_NHTW[..., 1:], weights_NHTW[..., -1:]], -1)
    N, H, T, _ = q_NHTK.shape
    Y, X = grid
    table_dtype = torch.promote_types(dtype, table_dtype)
    coef_NHYXW = coef_NHTW.to(table_dtype).view(N, H, Y, X, -1)
    out_NHYXJ = 0
    for phi_q_NHTC, phi_k_NHTC in zip(phi_q_NHTM.split(feature_chunk, -1), phi_k_NHTM.split(feature_chunk, -1)):
        C = phi_q_NHTC.shape[-1]
        phi_q_NHYXC = phi_q_NHTC.to(table_dtype).view(N, H, Y, X, C)
        a_NHTCJ = torch.einsum("nhtc,nhtj->nhtcj", phi_k_NHTC.to(table_dtype), v_NHTJ.to(table_dtype))
        # Summed-area table with a zero first row and column: S[y, x] = sum of a over rows < y, cols < x.
        table_NHYXF = F.pad(a_NHTCJ.reshape(N, H, Y, X, -1).cumsum(2).cumsum(3), (0, 0, 1, 0, 1, 0))
        total_NHCJ = table_NHYXF[:, :, -1, -1].unflatten(-1, (C, -1))  # Box_inf
        out_NHYXJ = out_NHYXJ + torch.einsum("nhyxc,nhcj->nhyxj", phi_q_NHYXC * coef_NHYXW[..., -1:], total_NHCJ)
        weighted_q_NHYXRC = phi_q_NHYXC.unsqueeze(-2) * coef_NHYXW[..., :-1, None]  # c_r phi(q_i), every ring
        out_NHYXJ = out_NHYXJ + _RingSums.apply(table_NHYXF, weighted_q_NHYXRC)
    out_NHTJ = out_NHYXJ.reshape(N, H, T, -1)
    out_NHTK = out_NHTJ[..., :-1] / out_NHTJ[..., -1:].clamp_min(1e-6)
    return out_NHTK.to(v_NHTK.dtype)


def dense_ripple_attention(q_NHTK: torch.Tensor, k_NHTK: torch.Tensor, v_NHTK: torch.Tensor,
                           weights_NHTW: torch.Tensor, *, grid: tuple[int, int],
                           key_mask_NT: torch.Tensor | None = None) -> torch.Tensor:
    """`ripple_attention` as a T x T matrix: each query's ring weights spread over the keys by
    their ring (capped at R, the far field), times phi(q_i).phi(k_j), normalised per row."""
    dtype = torch.promote_types(v_NHTK.dtype, torch.float32)
    phi_q_NHTM, phi_k_NHTM = _features(q_NHTK, k_NHTK, key_mask_NT, dtype)
    N, H, T, W = weights_NHTW.shape
    ring_TT = chebyshev_rings(grid, device=q_NHTK.device).clamp(max=W - 1)
    w_NHTT = torch.gather(weights_NHTW.to(dtype), -1, ring_TT.expand(N, H, T, T))
    scores_NHTT = phi_q_NHTM @ phi_k_NHTM.transpose(-2, -1) * w_NHTT
    out_NHTK = scores_NHTT @ v_NHTK.to(dtype) / scores_NHTT.sum(-1, keepdim=True).clamp_min(1e-6)
    return out_NHTK.to(v_NHTK.dtype)


def _features(q_NHTK: torch.Tensor, k_NHTK: torch.Tensor, key_mask_NT: torch.Tensor | None,
              dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """phi(q), phi(k) in `dtype`, a padded key's phi(k) zeroed so it adds nothing anywhere."""
    phi_q_NHTM = elu_feature_map(q_NHTK.to(dtype))
    phi_k_NHTM = elu_feature_map(k_NHTK.to(dtype))
    if key_mask_NT is not None:
        phi_k_NHTM = phi_k_NHTM * key_mask_NT[:, None, :, None].to(dtype)
    return phi_q_NHTM, phi_k_NHTM


def chebyshev_rings(grid: tuple[int, int], *, device: torch.device | None = None) -> torch.Tensor:
    """[T, T] ring of key j around query i on the grid read row by row: max(|dy|, |dx|)."""
    Y, X = grid
    index_T = torch.arange(Y * X, device=device)
    row_T, col_T = index_T // X, index_T % X
    return torch.maximum((row_T[:, None] - row_T[None, :]).abs(), (col_T[:, None] - col_T[None, :]).abs())


class _RingSums(torch.autograd.Function):
    """sum_r c_r phi(q_i)^T Box_r(i) from the summed-area table S ([N, H, Y+1, X+1, C*J]) and the
    weighted queries c_r phi(q_i) ([N, H, Y, X, R, C]): [N, H, Y, X, J].

    S gets `rings` more rows and columns on each side (zeros before, as its first row and
    column are; copies of its last after), so the corners of every clipped square are
    shifted slices of it, not gathers. The backward is written by hand: autograd through R
    rings of slices would allocate and zero-fill a table-sized gradient per slice (4R of
    them); here each ring adds its four corners into one gradient table, and only one
    ring's box (recomputed) is alive at a time, in backward as in forward."""

    @staticmethod
    def forward(ctx, table_NHYXF: torch.Tensor, weighted_q_NHYXRC: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(table_NHYXF, weighted_q_NHYXRC)
        bordered_NHYXF = _border(table_NHYXF, weighted_q_NHYXRC.shape[-2])
        out_NHYXJ = 0
        for r in range(weighted_q_NHYXRC.shape[-2]):
            box_NHYXCJ = _box(bordered_NHYXF, r, weighted_q_NHYXRC)
            out_NHYXJ = out_NHYXJ + torch.einsum("nhyxc,nhyxcj->nhyxj", weighted_q_NHYXRC[..., r, :], box_NHYXCJ)
        return out_NHYXJ

    @staticmethod
    def backward(ctx, grad_NHYXJ: torch.Tensor):
        table_NHYXF, weighted_q_NHYXRC = ctx.saved_tensors
        _, _, Y, X, R, _ = weighted_q_NHYXRC.shape
        bordered_NHYXF = _border(table_NHYXF, R)
        grad_bordered_NHYXF = torch.zeros_like(bordered_NHYXF)
        grad_q_NHYXRC = torch.empty_like(weighted_q_NHYXRC)
        for r in range(R):
            box_NHYXCJ = _box(bordered_NHYXF, r, weighted_q_NHYXRC)
            grad_q_NHYXRC[..., r, :] = torch.einsum("nhyxcj,nhyxj->nhyxc", box_NHYXCJ, grad_NHYXJ)
            grad_box_NHYXF = torch.einsum("nhyxc,nhyxj->nhyxcj", weighted_q_NHYXRC[..., r, :], grad_NHYXJ).flatten(-2)
            top, bottom = R - r, R + r + 1
            grad_bordered_NHYXF[:, :, bottom:bottom + Y, bottom:bottom + X] += grad_box_NHYXF
            grad_bordered_NHYXF[:, :, top:top + Y, bottom:bottom + X] -= grad_box_NHYXF
            grad_bordered_NHYXF[:, :, bottom:bottom + Y, top:top + X] -= grad_box_NHYXF
            grad_bordered_NHYXF[:, :, top:top + Y, top:top + X] += grad_box_NHYXF
        # Undo the border: the zeros before are constants; the copies after were of the last row / column.
        grad_NHYXF = grad_bordered_NHYXF
        for axis in (3, 2):
            core = grad_NHYXF.narrow(axis, R, grad_NHYXF.shape[axis] - 2 * R).clone()
            core.narrow(axis, core.shape[axis] - 1, 1).add_(
                grad_NHYXF.narrow(axis, grad_NHYXF.shape[axis] - R, R).sum(axis, keepdim=True))
            grad_NHYXF = core
        return grad_NHYXF, grad_q_NHYXRC


def _border(table_NHYXF: torch.Tensor, rings: int) -> torch.Tensor:
    """`rings` rows and columns more on each side: zeros before, copies of the last after."""
    for axis in (2, 3):
        last = table_NHYXF.narrow(axis, table_NHYXF.shape[axis] - 1, 1)
        after = last.expand(*last.shape[:axis], rings, *last.shape[axis + 1:])
        table_NHYXF = torch.cat([torch.zeros_like(after), table_NHYXF, after], axis)
    return table_NHYXF


def _box(bordered_NHYXF: torch.Tensor, r: int, weighted_q_NHYXRC: torch.Tensor) -> torch.Tensor:
    """Box_r(i): the sum of a over the square of radius r around each query (y, x), clipped to
    the image, [N, H, Y, X, C, J]. Its rows span table rows max(y - r, 0) .. min(y + r + 1, Y),
    i.e. bordered rows y - r + R .. y + r + 1 + R (likewise columns)."""
    _, _, Y, X, R, C = weighted_q_NHYXRC.shape
    top, bottom = R - r, R + r + 1
    band_NHYXF = bordered_NHYXF[:, :, bottom:bottom + Y] - bordered_NHYXF[:, :, top:top + Y]  # the box's rows
    box_NHYXF = band_NHYXF[:, :, :, bottom:bottom + X] - band_NHYXF[:, :, :, top:top + X]
    return box_NHYXF.unflatten(-1, (C, -1))
