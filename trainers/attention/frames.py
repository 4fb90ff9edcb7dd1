"""Where a 1-D near-field convolution's FFTs run: one circular FFT over the sequence and the
kernel's reach, or overlap-save frames of a length set by the kernel's width, whichever is
less FFT work (toeplitz.py has the arithmetic; rpe_fft.py the measurements).

Legend as in toeplitz.py: R' rows, C features, J value columns of one pass, T tokens, L FFT
points of a frame (its circle), n = count frames, S = step (new tokens per frame).

The kernel g(r) is non-zero for offsets lo <= r <= hi only (lo = 0 when causal), width
w = hi - lo + 1. On a circle of L points, frame f holds the tokens f*S - lead + (0 .. L-1):
  - context frames (the convolved sequence a): every token of that window (zeros off [0, T)),
    so outputs at frame positions lead .. lead + S - 1 see every input they need: S = L - w + 1
    and lead = hi (overlap-save);
  - block frames (the adjoint's sequence, grad s): only the tokens f*S .. f*S + S - 1, at
    positions lead .. lead + S - 1, zeros elsewhere; the correlation of a block frame with g
    spreads over the whole frame, and adjacent frames' results are summed (overlap-add: the
    adjoint of overlap-save). The same pair gives g's gradient frame by frame:
    sum_i grad_s(i) a(i - r) = sum over frames of the circular correlation of the block frame
    with the context frame, wrap-free for lo <= r <= hi.
One frame (count 1, lead 0, S = T) is the plain zero-padded circular FFT: a is zero beyond T,
so L >= T + max(hi, -lo) points hold every offset that reaches an output (wrapped outputs
land at positions >= T, which are cropped). With the far field split off (far_field.py) that
is T + max_offset - 1 points, where a circle for every offset of T tokens needs 2T - 1.

Choices left open (the paper convolves with one FFT):
- Frame length: over the 5-smooth lengths L from 2w - 1 (a frame's overlap-add tail, w - 1
  points, then reaches the next block only) to the one circle, the one with the least FFT
  work as modelled by count * L * log2(L). Measured (rpe_fft default table, causal, 1 thread,
  2026-12-01, under load; forward + backward of the kernel, CPU ms, the best of 2; before
  frames' value columns were padded once per cut, which took a further 10% off 2 x 9216 at
  16K):
      T = 4K:  one circle of 5120: 2670;  2 x 3072: 3098;  2 x 4096: 3832
      T = 8K:  one circle of 9216: 5270;  2 x 5120: 5840;  3 x 3840: 6208;  3 x 4096: 6534
      T = 16K: one circle of 17496: 11706;  2 x 9216: 12026;  4 x 5120: 12493;  6 x 4096: 13132
  Time follows the total of FFT points more than their cache footprint here, and the model
  ranks these as measured but for 16K's first two (its pick, 2 x 9216, was 2.7% slower). So
  the default table runs one circle of T + 1023 points up to 8K tokens (frames pay w - 1
  points of overlap each), 2 frames at 16K causal; frames take over as log2(T) outgrows that
  overlap (8 frames of 9216 points at 64K tokens), and for small tables at any length (the
  tests: max_offset 3 .. 8).
- Ties in the model go to the shorter length.
"""
import math

import torch
import torch.nn.functional as F


def smooth_length(least: int) -> int:
    """The smallest 5-smooth length (2^a 3^b 5^c) >= least: FFTs are fastest on small factors."""
    return min(_smooth_lengths(max(least, 1), 2 * max(least, 1)))


def _smooth_lengths(least: int, most: int) -> list[int]:
    """Every 5-smooth length in least .. most (there are few: about 500 below a million)."""
    lengths, p2 = [], 1
    while p2 <= most:
        p3 = p2
        while p3 <= most:
            p5 = p3
            while p5 <= most:
                lengths += [p5] if p5 >= least else []
                p5 *= 5
            p3 *= 3
        p2 *= 2
    return lengths


def plan_frames(tokens: int, lo: int, hi: int) -> "Frames":
    """The layout with the least modelled FFT work, count * L * log2(L) (module docstring)."""
    width, single = hi - lo + 1, smooth_length(tokens + max(hi, -lo))
    candidates = [Frames(tokens, lo, hi, n) for n in _smooth_lengths(min(2 * width - 1, single), single)]
    return min(candidates, key=lambda frames: (frames.points * math.log2(max(frames.length, 2)), frames.length))


class Frames:
    """The layout of one call: where a sequence of `tokens` and a kernel on offsets lo .. hi
    go on circles of `length` points (one circle if the tokens and the kernel's reach fit,
    else overlap-save frames, length >= 2w - 1), and the buffers of a pass ([R', C, J', count, L])."""

    def __init__(self, tokens: int, lo: int, hi: int, length: int):
        self.tokens, self.lo, self.hi, self.length = tokens, lo, hi, length
        width = hi - lo + 1
        if length >= tokens + max(hi, -lo):
            self.lead, self.step, self.count = 0, tokens, 1
        else:
            assert length >= 2 * width - 1, "a frame's overlap-add tail must stay within the next block"
            self.lead, self.step = hi, length - width + 1
            self.count = -(-tokens // self.step)
        self.sizes, self.dims = (self.length,), (-1,)
        self.frame_axes = 1  # buffers are [R', C, J', count, L]: one axis more than a torus's
        self.points = self.count * self.length  # FFT points per sequence, what a pass's buffers hold
        self.extent = (self.count - 1) * self.step + self.length  # the token axis context frames read

    def circle_offsets(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The offset each point of the circle stands for (n, or n - L past the middle) and
        whether it is one of the kernel's (lo .. hi); g is zero at the others. [L] each."""
        n = torch.arange(self.length, device=device)
        offset = torch.where(n <= self.hi, n, n - self.length)
        return offset, offset >= self.lo

    def buffers(self, rows: int, features: int, cols: int, like: torch.Tensor) -> list[torch.Tensor]:
        """A pass's context frames and block frames, [R', C, J', count, L] each, zeroed once:
        what a pass does not write (padding) stays zero."""
        return [like.new_zeros(rows, features, cols, self.count, self.length) for _ in range(2)]

    def pad_context(self, x_RMT: torch.Tensor) -> torch.Tensor:
        """The token axis as the context frames read it: [R, M, extent]."""
        return x_RMT if self.count == 1 else F.pad(x_RMT, (self.lead, self.extent - self.lead - self.tokens))

    def pad_blocks(self, x_RMT: torch.Tensor) -> torch.Tensor:
        """The token axis cut into the frames' blocks: [R, M, count, step]."""
        pad = self.count * self.step - self.tokens
        return (F.pad(x_RMT, (0, pad)) if pad else x_RMT).unflatten(-1, (self.count, self.step))  # F.pad copies

    def context(self, phi_RCe: torch.Tensor, w_RJe: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """rfft of the context frames of phi_c(t) w_j(t) (inputs from pad_context): [R', C, J, count, L/2 + 1]."""
        if self.count == 1:  # one frame: the tokens, then zeros
            torch.mul(phi_RCe.unsqueeze(2), w_RJe.unsqueeze(1), out=out[..., 0, :self.tokens])
        else:  # overlapping windows of the padded tokens
            phi_RCnL, w_RJnL = (x.unfold(-1, self.length, self.step) for x in (phi_RCe, w_RJe))
            torch.mul(phi_RCnL.unsqueeze(2), w_RJnL.unsqueeze(1), out=out)
        return torch.fft.rfft(out)

    def blocks(self, phi_RCnS: torch.Tensor, w_RJnS: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """rfft of the block frames of phi_c(t) w_j(t) (inputs from pad_blocks): [R', C, J, count, L/2 + 1]."""
        torch.mul(phi_RCnS.unsqueeze(2), w_RJnS.unsqueeze(1), out=out[..., self.lead:self.lead + self.step])
        return torch.fft.rfft(out)

    def inverse(self, S_RCJnF: torch.Tensor) -> torch.Tensor:
        """Overlap-save: the valid outputs of the context frames' convolution, in token order: [R', C, J, T]."""
        return self._crop(torch.fft.irfft(S_RCJnF, n=self.length))

    def adjoint(self, S_RCJnF: torch.Tensor) -> torch.Tensor:
        """Overlap-add: the block frames' correlations summed where adjacent frames overlap: [R', C, J, T]."""
        y_RCJnL = torch.fft.irfft(S_RCJnF, n=self.length)
        if self.count == 1:
            return self._crop(y_RCJnL)
        S, tail = self.step, self.length - self.step  # tail <= S: frame f's tail lands in block f + 1 only
        out = y_RCJnL.new_zeros(*y_RCJnL.shape[:-2], (self.count + 1) * S)
        out[..., :self.count * S].unflatten(-1, (self.count, S)).copy_(y_RCJnL[..., :S])
        out[..., S:].unflatten(-1, (self.count, S))[..., :tail] += y_RCJnL[..., S:]
        return out[..., self.lead:self.lead + self.tokens]

    def _crop(self, y_RCJnL: torch.Tensor) -> torch.Tensor:
        return y_RCJnL[..., self.lead:self.lead + self.step].flatten(-2)[..., :self.tokens]
