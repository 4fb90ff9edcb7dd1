"""Toeplitz matrix-vector products by FFT, with a hand-written backward.

Legend: P members, B sequences per member, N = P*B (member-major), H heads (or 1, shared
by the heads), x = any axes between H and T, T tokens, L = 2T FFT points, F = T + 1
frequencies.

s_i = sum_j g(i - j) a_j for i, j < T is a circular convolution on L = 2T >= 2T - 1 points
(offsets -(T-1) .. T-1 never wrap onto each other), so s = irfft(rfft(g) * rfft(a)).
Autograd through rfft / irfft works but pays for zero-filled and copied full-size buffers
at every step (most of the time on CPU); the backward here is two more FFT products:
  grad a_j = sum_i g(i - j) grad s_i     (correlation with g:  conj(G) * rfft(grad s))
  grad g(r) = sum_j a_j grad s_(j + r)   (correlation with a:  conj(A) * rfft(grad s)),
the latter summed over every axis g is broadcast along in the frequency domain, so only
one small irfft per member and head remains. The 2-D (block-Toeplitz) form is the same
with rfft2 / irfft2 over a (2 rows, 2 cols) grid.
"""
import torch


class _ToeplitzConvolution(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g_PHL: torch.Tensor, a_NHxT: torch.Tensor) -> torch.Tensor:
        P, H, L = g_PHL.shape
        g_fft_PBHxF = torch.fft.rfft(g_PHL).view(P, 1, H, *(1,) * (a_NHxT.dim() - 3), -1)
        a_fft_PBHxF = torch.fft.rfft(a_NHxT, n=L).unflatten(0, (P, -1))
        ctx.save_for_backward(g_fft_PBHxF, a_fft_PBHxF)
        return torch.fft.irfft(a_fft_PBHxF * g_fft_PBHxF, n=L)[..., :L // 2].flatten(0, 1)

    @staticmethod
    def backward(ctx, grad_s_NHxT: torch.Tensor):
        g_fft_PBHxF, a_fft_PBHxF = ctx.saved_tensors
        L = 2 * grad_s_NHxT.shape[-1]
        grad_fft_PBHxF = torch.fft.rfft(grad_s_NHxT, n=L).unflatten(0, (g_fft_PBHxF.shape[0], -1))
        grad_a = torch.fft.irfft(grad_fft_PBHxF * g_fft_PBHxF.conj(), n=L)[..., :L // 2].flatten(0, 1)
        # Sum over the axes g broadcasts along (B, the extra axes, H when g is shared).
        broadcast = [axis for axis in range(a_fft_PBHxF.dim() - 1) if g_fft_PBHxF.shape[axis] == 1]
        grad_g_fft = (grad_fft_PBHxF * a_fft_PBHxF.conj()).sum(broadcast, keepdim=True)
        grad_g = torch.fft.irfft(grad_g_fft, n=L).flatten(0, 1).reshape(g_fft_PBHxF.shape[0], -1, L)
        return grad_g, grad_a


def toeplitz_apply(g_PHL: torch.Tensor, a_NHxT: torch.Tensor) -> torch.Tensor:
    """s_i = sum_j g(i - j) a_j along the last axis of a ([N, H, ..., T]), each member with
    its own g. g_PHL holds g on the circle of L = 2T points: g[n] = g(n) for n < T and
    g(n - 2T) for n > T (g[T] is never read)."""
    return _ToeplitzConvolution.apply(g_PHL, a_NHxT)
