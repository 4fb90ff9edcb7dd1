"""The far field of a clamped relative-position mask, by prefix sums along T.

Legend as in toeplitz.py (R' rows, C features, J value columns of one pass, T tokens);
D = max_offset, the split: f(r) = c+ = f(D) for r >= D and c- = f(-D) for r <= -D.

  s_far(i) = c+ sum_{t <= i - D} a(t) + c- sum_{t >= i + D} a(t)
           = c+ pre(i - D) + c- (pre(T - 1) - pre(i + D - 1)),   pre(n) = sum_{t <= n} a(t)
  grad a(t) = c+ sum_{i >= t + D} grad_s(i) + c- sum_{i <= t - D} grad_s(i)   (the same sums of grad s)
  grad c+ = sum_i grad_s(i) pre(i - D),  grad c- = sum_i grad_s(i) (pre(T - 1) - pre(i + D - 1))
(c- is not used when causal). The near field, offsets |r| < D, is the FFT convolution's
(frames.py). Exact arithmetic; in floating point a prefix sum's rounding is relative to the
sum so far, and a suffix, taken as a difference of two prefix sums, to the sequence's total:
the same order as one FFT over the sequence (toeplitz.py), in fp64 by default.
"""
import torch


class FarField:
    def __init__(self, c_PH2: torch.Tensor, *, max_offset: int, causal: bool, tokens: int):
        self.c_G2 = c_PH2.flatten(0, 1)  # [G, 2]: (c+, c-) per (member, head) pair
        self.D, self.causal, self.tokens = max_offset, causal, tokens

    def buffers(self, rows: int, features: int, cols: int, like: torch.Tensor) -> list[torch.Tensor]:
        """Two per pass: a's prefix sums (kept from forward's add_ for the backward's gradients) and grad s's."""
        return [like.new_empty(rows, features, cols, self.tokens) for _ in range(2)]

    def add_(self, s_RCJT, phi_RCT, w_RJT, c_R2, pre_RCJT) -> None:
        """s += s_far of a = phi_c w_j; pre_RCJT (a buffer) is left holding a's prefix sums."""
        D, T = self.D, self.tokens
        torch.mul(phi_RCT.unsqueeze(2), w_RJT.unsqueeze(1), out=pre_RCJT)
        pre_RCJT.cumsum_(-1)
        s_RCJT[..., D:].addcmul_(pre_RCJT[..., :T - D], _each(c_R2[:, 0]))
        if not self.causal:
            s_RCJT[..., :T - D].addcmul_(pre_RCJT[..., -1:] - pre_RCJT[..., D - 1:T - 1], _each(c_R2[:, 1]))

    def backward_(self, grad_a_RCJT, phi_q_RCT, grad_y_RJT, c_R2, pre_RCJT, grad_pre_RCJT) -> torch.Tensor:
        """grad a += the far field's part (from grad s = phi_q_c grad_y_j); returns grad (c+, c-) [R', 2].
        pre_RCJT: a's prefix sums from add_ in this pass."""
        D, T = self.D, self.tokens
        grad_s_RCJT = torch.mul(phi_q_RCT.unsqueeze(2), grad_y_RJT.unsqueeze(1), out=grad_pre_RCJT)
        grad_c_R2 = torch.zeros(len(c_R2), 2, dtype=c_R2.dtype, device=c_R2.device)
        grad_c_R2[:, 0] = (grad_s_RCJT[..., D:] * pre_RCJT[..., :T - D]).sum((1, 2, 3))
        if not self.causal:
            suffix_RCJT = pre_RCJT[..., -1:] - pre_RCJT[..., D - 1:T - 1]
            grad_c_R2[:, 1] = (grad_s_RCJT[..., :T - D] * suffix_RCJT).sum((1, 2, 3))
        grad_pre_RCJT.cumsum_(-1)  # grad s's prefix sums from here on
        grad_a_RCJT[..., :T - D].addcmul_(grad_pre_RCJT[..., -1:] - grad_pre_RCJT[..., D - 1:T - 1], _each(c_R2[:, 0]))
        if not self.causal:
            grad_a_RCJT[..., D:].addcmul_(grad_pre_RCJT[..., :T - D], _each(c_R2[:, 1]))
        return grad_c_R2


def _each(c_R: torch.Tensor) -> torch.Tensor:
    """A per-row constant, shaped to scale [R', C, J, T]."""
    return c_R.view(-1, 1, 1, 1)
