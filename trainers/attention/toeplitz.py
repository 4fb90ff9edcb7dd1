"""Linear attention's readout through a Toeplitz (1-D) or block-Toeplitz (2-D grid) mask, by
FFT, with a hand-written backward that recomputes the transforms instead of keeping them.

Legend: P members, B sequences per member, N = P*B (member-major), H heads, R = N*H rows
(sequence, head), M features of phi, C features per pass, J value columns, T tokens (1-D)
or Y x X grid positions (2-D), x = the token axes ((T,) or (Y, X)), L FFT points per token
axis, F = its rfft's length, G = P*H (member, head) pairs, each with its own g.

  y_j(i) = sum_m phi_q_m(i) s_mj(i),   s_mj(i) = sum_t g(i - t) a_mj(t),   a_mj(t) = phi_k_m(t) v_j(t)

1-D: s = g * a is a Toeplitz matrix-vector product, which is a circular convolution on any
L >= 2T - 1 points (offsets -(T-1) .. T-1 never wrap onto each other): s = irfft(G A),
G = rfft(g), A = rfft(a zero-padded to L). L is the smallest 5-smooth length (2^a 3^b 5^c)
>= 2T - 1 (FFTs are fastest on lengths with small factors), rather than 2T (`fft_length`).
A g that is zero outside offsets lo .. hi (rpe_fft's near field, |r| < max_offset, once its
constant far field is split off: far_field.py) needs fewer points: one circle of
T + max(hi, -lo) points, or overlap-save frames of a fixed length (frames.py), whichever is
less FFT work; `near_frames` plans them. 2-D: on a Y x X grid the matrix over the row-major
tokens is block-Toeplitz, and the same argument per axis makes s a circular convolution on
an (L_y, L_x) grid: rfft2 / irfft2 (`Torus`: one FFT per sequence, every offset).

Memory: a and s hold M * J numbers per token and row (over 4 K at K = 64), so they exist
only a pass at a time: R' rows x C features x J' columns whose buffers stay under
`pass_bytes` (small passes stay in cache: rpe_fft.py has the measurements). The outer
products are written into zero-padded buffers allocated once per call, whose padding is
zeroed once (rfft never writes its input); a layout (`Torus`, frames.Frames) says where
they go: `context` (the sequence convolved, a), `blocks` (the sequence correlated in
backward, grad s; the same as context for one FFT per sequence), `inverse` (s, cropped) and
`adjoint` (grad a: frames' results overlap-added). Nothing of that size is kept for backward (the inputs are
O(T (M + J)) per row): backward recomputes A and s, one rfft and one irfft per sequence
more than keeping them (6 transforms instead of 4), for a peak of one pass's buffers
instead of O(T M J) complex numbers.
The gradients, two more FFT products per pass:
  grad s_mj(i) = phi_q_m(i) grad y_j(i)       grad phi_q_m(i) = sum_j s_mj(i) grad y_j(i)
  grad a_mj(t) = sum_i g(i - t) grad s_mj(i)  (correlation with g: conj(G) * rfft(grad s))
  grad phi_k_m(t) = sum_j grad a_mj(t) v_j(t),  grad v_j(t) = sum_m grad a_mj(t) phi_k_m(t)
  grad g(r) = sum_t a(t) grad s(t + r)        (correlation with a: conj(A) * rfft(grad s)),
the last summed over B, the features, J (and frames) in the frequency domain, so one small inverse
FFT per member and head remains. Autograd through rfft / irfft works but zero-fills and
copies full-size buffers at every step, and would keep A for backward.
"""
import math

import torch

from trainers.attention.far_field import add_far_field_, far_field_backward_
from trainers.attention.frames import Frames, plan_frames, smooth_length


def fft_length(tokens: int) -> int:
    """The smallest 5-smooth length >= 2 * tokens - 1: a circular convolution that long holds
    every offset -(tokens-1) .. tokens-1 without wrapping."""
    return smooth_length(2 * tokens - 1)


class _MaskedReadout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g_PHL, far_R2, phi_q_RMx, phi_k_RMx, v_RJx, layout, far: dict | None, pass_bytes: int):
        passes = _Passes(g_PHL, phi_k_RMx, v_RJx, pass_bytes, layout)
        y_RJx = torch.zeros_like(v_RJx)
        for rows, features, cols, G_R11F in passes:
            s_RCJx = layout.inverse(passes.context(phi_k_RMx[rows, features], v_RJx[rows, cols]).mul_(G_R11F))
            y_RJx[rows, cols] += (s_RCJx * phi_q_RMx[rows, features].unsqueeze(2)).sum(1)
        if far is not None:
            add_far_field_(y_RJx, phi_q_RMx, phi_k_RMx, v_RJx, far_R2, **far)
        ctx.save_for_backward(g_PHL, far_R2, phi_q_RMx, phi_k_RMx, v_RJx)
        ctx.layout, ctx.far, ctx.pass_bytes = layout, far, pass_bytes
        return y_RJx

    @staticmethod
    def backward(ctx, grad_y_all_RJx):
        g_PHL, far_R2, phi_q_RMx, phi_k_RMx, v_all_RJx = ctx.saved_tensors
        layout = ctx.layout
        passes = _Passes(g_PHL, phi_k_RMx, v_all_RJx, ctx.pass_bytes, layout)
        grad_y_all_RJx = grad_y_all_RJx.contiguous()
        grad_q, grad_k, grad_v = torch.zeros_like(phi_q_RMx), torch.zeros_like(phi_k_RMx), torch.zeros_like(v_all_RJx)
        grad_G_GF = torch.zeros_like(passes.G_GF)  # G = (member, head) pairs
        summed = tuple(range(1, 3 + layout.frame_axes))  # features, columns (and frames)
        for rows, features, cols, G_R11F in passes:
            phi_k_RCx, v_RJx, grad_y_RJx = phi_k_RMx[rows, features], v_all_RJx[rows, cols], grad_y_all_RJx[rows, cols]
            A_RCJF = passes.context(phi_k_RCx, v_RJx)
            grad_S_RCJF = passes.blocks(phi_q_RMx[rows, features], grad_y_RJx)
            grad_G_GF.index_add_(0, passes.pair[rows], (A_RCJF.conj() * grad_S_RCJF).sum(summed))
            s_RCJx = layout.inverse(A_RCJF.mul_(G_R11F))
            grad_q[rows, features] += (s_RCJx * grad_y_RJx.unsqueeze(1)).sum(2)
            grad_a_RCJx = layout.adjoint(grad_S_RCJF.mul_(G_R11F.conj()))
            grad_k[rows, features] += (grad_a_RCJx * v_RJx.unsqueeze(1)).sum(2)
            grad_v[rows, cols] += (grad_a_RCJx * phi_k_RCx.unsqueeze(2)).sum(1)
        grad_g_PHL = torch.fft.irfftn(grad_G_GF, s=layout.sizes, dim=layout.dims).view_as(g_PHL)
        grad_far_R2 = None
        if ctx.far is not None:  # into the same gradients: no second set to sum (far_field.py)
            grad_far_R2 = far_field_backward_(grad_y_all_RJx, phi_q_RMx, phi_k_RMx, v_all_RJx, far_R2, grad_q, grad_k,
                                              grad_v, **ctx.far)
        return grad_g_PHL, grad_far_R2, grad_q, grad_k, grad_v, None, None, None


class _Passes:
    """Cuts the R x M x J (row, feature, value column) sequences into passes of at most
    `pass_bytes` per buffer (R' rows x C features x J' columns, columns filled first), and
    owns the pass's buffers the outer products are written into (the layout's): allocated
    once per call. Iterating yields (rows, features, columns, G of those rows [R', 1, 1, F...],
    with one more axis of 1 for frames)."""

    def __init__(self, g_PHL, phi_RMx, v_RJx, pass_bytes, layout):
        R, M = phi_RMx.shape[:2]
        J = v_RJx.shape[1]
        self.layout = layout
        P, H = g_PHL.shape[:2]
        self.G_GF = torch.fft.rfftn(g_PHL, dim=layout.dims).flatten(0, 1)
        # Row r = (n, h) of N = P*B member-major sequences: its (member, head) pair's G.
        row = torch.arange(R, device=v_RJx.device)
        self.pair = (row // (R // P)) * H + row % H
        units = max(1, pass_bytes // (layout.points * v_RJx.element_size()))
        J_pass = _even_split(J, min(J, units))
        C = _even_split(M, min(M, max(1, units // J_pass)))
        R_pass = _even_split(R, min(R, max(1, units // (J_pass * C))))
        # Features innermost: the value columns of a (rows, columns) cut are padded once for all its features.
        self.cuts = [(slice(r, min(r + R_pass, R)), slice(c, min(c + C, M)), slice(j, min(j + J_pass, J)))
                     for r in range(0, R, R_pass) for j in range(0, J, J_pass) for c in range(0, M, C)]
        self.buffers = layout.buffers(R_pass, C, J_pass, v_RJx)
        self.padded_w = {}  # transform -> ((rows, columns) start, the padded columns)

    def __iter__(self):
        ones = (1,) * (2 + self.layout.frame_axes)  # features, columns (and frames)
        for rows, features, cols in self.cuts:
            self.shape = (rows.stop - rows.start, features.stop - features.start, cols.stop - cols.start)
            self.cut = (rows.start, cols.start)
            G_RF = self.G_GF[self.pair[rows]]
            yield rows, features, cols, G_RF.view(G_RF.shape[0], *ones, *G_RF.shape[1:])

    def context(self, phi_RCx, w_RJx):
        """The layout's rfft of the sequence to convolve, phi_c(t) w_j(t): [R', C, J, ..., F...].
        The inputs are padded a pass at a time: padded whole, they would be kept as long as the
        call, twice O(T (M + J)) more per row."""
        pad = self.layout.pad_context
        return self.layout.context(pad(phi_RCx), self._padded("context", pad, w_RJx), self._buffer(0))

    def blocks(self, phi_RCx, w_RJx):
        """The layout's rfft of the sequence to correlate (the adjoint's): [R', C, J, ..., F...]."""
        pad = self.layout.pad_blocks
        return self.layout.blocks(pad(phi_RCx), self._padded("blocks", pad, w_RJx), self._buffer(-1))

    def _padded(self, transform, pad, w_RJx):
        """pad(w), reused while the cut's rows and columns stay (measured: padding them for every
        feature cost 30% of the time at 16K tokens in frames)."""
        cut, padded = self.padded_w.get(transform, (None, None))
        if cut != self.cut:
            padded = pad(w_RJx)
            self.padded_w[transform] = (self.cut, padded)
        return padded

    def _buffer(self, which):
        R, C, J = self.shape
        return self.buffers[which][:R, :C, :J]


class Torus:
    """The layout of one zero-padded circular (1-D) or toroidal (2-D) FFT per sequence, on
    `fft_length` points per token axis: every offset fits without wrapping (the 2-D mask's)."""

    frame_axes = 0

    def __init__(self, tokens: tuple[int, ...]):
        self.sizes = tuple(fft_length(t) for t in tokens)
        self.dims = tuple(range(-len(tokens), 0))
        self.points = math.prod(self.sizes)
        self.crop = (..., *(slice(0, t) for t in tokens))

    def buffers(self, rows: int, features: int, cols: int, like: torch.Tensor) -> list[torch.Tensor]:
        """One buffer for both transforms: its padding is zeroed once (rfft never writes its input)."""
        return [like.new_zeros(rows, features, cols, *self.sizes)]

    def pad_context(self, x_RMx):
        return x_RMx  # the buffer's padding is zeroed once: the tokens go in as they are

    pad_blocks = pad_context

    def context(self, phi_RCx, w_RJx, padded):
        """rfft of the zero-padded outer product phi_c(t) w_j(t): [R', C, J, F...]."""
        torch.mul(phi_RCx.unsqueeze(2), w_RJx.unsqueeze(1), out=padded[self.crop])
        return torch.fft.rfftn(padded, dim=self.dims)

    blocks = context  # one FFT per sequence holds every offset either way

    def inverse(self, S_RCJF):
        """irfft, cropped to the tokens: [R', C, J, x]."""
        return torch.fft.irfftn(S_RCJF, s=self.sizes, dim=self.dims)[self.crop]

    adjoint = inverse


def _even_split(total: int, most: int) -> int:
    """The size of ceil(total / most) near-equal parts (so the last pass is not a sliver)."""
    return -(-total // -(-total // most))


def masked_readout(g_PHL: torch.Tensor, phi_q_RMx: torch.Tensor, phi_k_RMx: torch.Tensor, v_RJx: torch.Tensor,
                   *, pass_bytes: int, frames: Frames | None = None, far_R2: torch.Tensor | None = None,
                   max_offset: int = 0, causal: bool = False, chunk_size: int = 64) -> torch.Tensor:
    """y_j(i) = sum_m phi_q_m(i) sum_t g(i - t) phi_k_m(t) v_j(t), [R, J, x], for R = N*H
    rows (sequence n, head h; n member-major), each (member, head) with its own g. The
    token axes x are (T,) or (Y, X). Without `frames`, one FFT per sequence: g_PHL holds g on
    the circle (or torus) of `fft_length(T)` points per axis, g[n] = g(n) for n < T and
    g(n - L) for n > L - T (entries between are never read). With `frames` (1-D, g zero
    outside frames.lo .. frames.hi), g_PHL is on the frames' circle (Frames.circle_offsets).
    Every tensor has the FFT dtype; q, k, v are [R, M or J, x] (token axes last).
    `pass_bytes` bounds each buffer of a pass. With `far_R2` (1-D), (c+, c-) per row: plus the
    far field, c+ at every offset >= max_offset and c- at every offset <= -max_offset (unless
    causal), by chunked prefix sums of `chunk_size` tokens (far_field.py)."""
    layout = Torus(tuple(v_RJx.shape[2:])) if frames is None else frames
    far = None if far_R2 is None else {"max_offset": max_offset, "causal": causal, "chunk_size": chunk_size}
    return _MaskedReadout.apply(g_PHL, far_R2, phi_q_RMx, phi_k_RMx, v_RJx, layout, far, pass_bytes)


def near_frames(tokens: int, max_offset: int, causal: bool) -> Frames:
    """The frames of the near field: the offsets |r| < max_offset that occur among `tokens`
    tokens (r >= 0 only when causal); the far field is far_field.py's."""
    hi = min(max_offset, tokens) - 1
    return plan_frames(tokens, 0 if causal else -hi, hi)
