"""Where a 1-D near-field convolution's FFTs run: one circular FFT over the whole sequence when
that is short, else overlap-save frames of a fixed length set by the kernel's width, so the
time grows linearly in T past a few kernel widths instead of as T log T with FFTs that leave
the cache (toeplitz.py has the arithmetic; rpe_fft.py the measurements).

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
land at positions >= T, which are cropped).

Choices left open (the paper convolves with one FFT):
- Frame length: the smallest 5-smooth length >= 4w (step S = L - w + 1 >= 3w + 1, so at most
  4/3 of the FFT points are overlap), but no longer than 4096 points while a length >= 2w - 1
  (S >= w: a block's overlap-add tail reaches only the next frame) fits under it: here an
  fp64 rfft + irfft pair took 3.5 ns per point at 4096 and 5.8 at 8192 (1 thread, 2026-12-01,
  under load: per point it leaves the core's cache). Default rpe_fft tables (max_offset 1024):
  4096 points, S = 3073 causal (w = 1024) and 2050 bidirectional (w = 2047).
- One frame or several: one circular FFT when its length is at most the frame length (short
  sequences, or T <= max_offset), else frames.
"""
import torch
import torch.nn.functional as F

_CACHE_POINTS = 4096  # the longest frame that stayed fast per point (module docstring)


def smooth_length(least: int) -> int:
    """The smallest 5-smooth length (2^a 3^b 5^c) >= least: FFTs are fastest on small factors."""
    length = max(least, 1)
    while True:
        rest = length
        for prime in (2, 3, 5):
            while rest % prime == 0:
                rest //= prime
        if rest == 1:
            return length
        length += 1


def frame_length(width: int) -> int:
    """The frame length for a kernel of `width` offsets (module docstring: choices)."""
    return max(smooth_length(2 * width - 1), min(smooth_length(4 * width), _CACHE_POINTS))


class Frames:
    """The layout of one call: where a sequence of `tokens` and a kernel on offsets lo .. hi
    go on circles of `length` points, and the buffers of a pass ([R', C, J', count, L])."""

    def __init__(self, tokens: int, lo: int, hi: int):
        self.tokens, self.lo, self.hi = tokens, lo, hi
        width = hi - lo + 1
        single, frame = smooth_length(tokens + max(hi, -lo)), frame_length(width)
        if single <= frame:
            self.length, self.lead, self.step, self.count = single, 0, tokens, 1
        else:
            self.length, self.lead, self.step = frame, hi, frame - width + 1
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
        """The token axis as the context frames read it (once per call, not per pass): [R, M, extent]."""
        return x_RMT if self.count == 1 else F.pad(x_RMT, (self.lead, self.extent - self.lead - self.tokens))

    def pad_blocks(self, x_RMT: torch.Tensor) -> torch.Tensor:
        """The token axis cut into the frames' blocks: [R, M, count, step]."""
        return F.pad(x_RMT, (0, self.count * self.step - self.tokens)).unflatten(-1, (self.count, self.step))

    def context(self, phi_RCe: torch.Tensor, w_RJe: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """rfft of the context frames of phi_c(t) w_j(t) (inputs from pad_context): [R', C, J, count, L/2 + 1]."""
        if self.count == 1:  # one frame: the tokens, then zeros
            torch.mul(phi_RCe.unsqueeze(2), w_RJe.unsqueeze(1), out=out[..., 0, :self.tokens])
            return torch.fft.rfft(out)
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
