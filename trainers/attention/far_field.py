"""The far field of a clamped relative-position mask: every offset |i - t| >= D = max_offset
has the same mask value, c+ = f(D) after the query (i - t >= D) and c- = f(-D) before it
(t - i >= D; unused when causal), so that part of the masked readout is a delayed prefix sum:

  s_far(i) = c+ sum_{t <= i - D} a(t) + c- sum_{t >= i + D} a(t),   a(t) = phi_k(t) v(t)^T
  y_far(i) = phi_q(i)^T s_far(i)
           = c+ [causal readout of (phi_q[D:], phi_k[:T-D], v[:T-D])] at i - D
           + c- [the same on the reversed sequences (phi_q[:T-D], phi_k[D:], v[D:])] at i

Each term is un-normalized causal linear attention on sequences shifted by D, computed by
the `linear` kind's chunked prefix sums (chunked.py: quadratic inside chunks of
`chunk_size`, one running [M, J] state across them), O(T (chunk + M) J) and linear in T;
autograd differentiates it (chunked.py's scan has its own backward), c+ and c- included.
Its rounding is that of prefix sums (relative to the sum so far); the near field's
(|i - t| < D, toeplitz.py) is relative to a frame.

Legend: x = leading axes (N, H), T tokens, M features of phi, J value columns, D = max_offset.
"""
import torch
import torch.nn.functional as F

from trainers.attention.chunked import causal_readout


def far_field(phi_q_xTM: torch.Tensor, phi_k_xTM: torch.Tensor, v_xTJ: torch.Tensor, c_x2: torch.Tensor, *,
              max_offset: int, causal: bool, chunk_size: int) -> torch.Tensor:
    """y_far, [..., T, J]: zero when T <= D (no offset reaches the far field). c_x2 holds
    (c+, c-) per leading index, broadcast over T and J."""
    D, T = max_offset, v_xTJ.shape[-2]
    if T <= D:
        return torch.zeros_like(v_xTJ)
    chunk_size = min(chunk_size, T - D)  # a chunk longer than the sequences would only pad them
    after = causal_readout(phi_q_xTM[..., D:, :], phi_k_xTM[..., :T - D, :], v_xTJ[..., :T - D, :],
                           chunk_size=chunk_size)
    y_xTJ = F.pad(after * c_x2[..., :1, None], (0, 0, D, 0))
    if not causal:
        flip = [x.flip(-2) for x in (phi_q_xTM[..., :T - D, :], phi_k_xTM[..., D:, :], v_xTJ[..., D:, :])]
        before = causal_readout(*flip, chunk_size=chunk_size).flip(-2)
        y_xTJ = y_xTJ + F.pad(before * c_x2[..., 1:, None], (0, 0, 0, D))
    return y_xTJ
