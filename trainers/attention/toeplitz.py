"""Toeplitz (1-D) and block-Toeplitz (2-D grid) matrix-vector products by FFT, with a
hand-written backward.

Legend: P members, B sequences per member, N = P*B (member-major), H heads (or 1, shared
by the heads), x = any axes between H and the token axes, T tokens (1-D) or Y x X grid
positions (2-D), L = 2T (or 2Y, 2X) FFT points per token axis.

1-D: s_i = sum_j g(i - j) a_j for i, j < T is a circular convolution on L = 2T >= 2T - 1
points (offsets -(T-1) .. T-1 never wrap onto each other), so s = irfft(rfft(g) * rfft(a)).
2-D: s_(y,x) = sum_(m,n) g(y - m, x - n) a_(m,n) on a Y x X grid, whose matrix over the
row-major tokens is block-Toeplitz (Toeplitz blocks in a Toeplitz pattern); the same
argument per axis makes it a circular convolution on the (2Y, 2X) grid: rfft2 / irfft2.
Autograd through rfft / irfft works but pays for zero-filled and copied full-size buffers
at every step (most of the time on CPU); the backward here is two more FFT products:
  grad a_j = sum_i g(i - j) grad s_i     (correlation with g:  conj(G) * rfft(grad s))
  grad g(r) = sum_j a_j grad s_(j + r)   (correlation with a:  conj(A) * rfft(grad s)),
the latter summed over every axis g is broadcast along in the frequency domain, so only
one small inverse FFT per member and head remains.
"""
import torch


class _ToeplitzConvolution(torch.autograd.Function):
    @staticmethod
    def forward(ctx, g_PHL: torch.Tensor, a_NHxT: torch.Tensor) -> torch.Tensor:
        P, H, *sizes = g_PHL.shape  # sizes: (L,) or (L_rows, L_cols)
        dims = tuple(range(-len(sizes), 0))
        g_fft_PBHxF = torch.fft.rfftn(g_PHL, dim=dims)
        g_fft_PBHxF = g_fft_PBHxF.view(P, 1, H, *(1,) * (a_NHxT.dim() - 2 - len(sizes)), *g_fft_PBHxF.shape[2:])
        a_fft_PBHxF = torch.fft.rfftn(a_NHxT, s=sizes, dim=dims).unflatten(0, (P, -1))
        ctx.save_for_backward(g_fft_PBHxF, a_fft_PBHxF)
        ctx.sizes = sizes
        return _crop(torch.fft.irfftn(a_fft_PBHxF * g_fft_PBHxF, s=sizes, dim=dims), sizes).flatten(0, 1)

    @staticmethod
    def backward(ctx, grad_s_NHxT: torch.Tensor):
        g_fft_PBHxF, a_fft_PBHxF = ctx.saved_tensors
        sizes = ctx.sizes
        dims = tuple(range(-len(sizes), 0))
        P = g_fft_PBHxF.shape[0]
        grad_fft_PBHxF = torch.fft.rfftn(grad_s_NHxT, s=sizes, dim=dims).unflatten(0, (P, -1))
        grad_a = _crop(torch.fft.irfftn(grad_fft_PBHxF * g_fft_PBHxF.conj(), s=sizes, dim=dims), sizes).flatten(0, 1)
        # Sum over the axes g broadcasts along (B, the extra axes, H when g is shared).
        broadcast = [axis for axis in range(a_fft_PBHxF.dim() - len(sizes)) if g_fft_PBHxF.shape[axis] == 1]
        grad_g_fft = (grad_fft_PBHxF * a_fft_PBHxF.conj()).sum(broadcast, keepdim=True)
        grad_g = torch.fft.irfftn(grad_g_fft, s=sizes, dim=dims).flatten(0, 1).reshape(P, -1, *sizes)
        return grad_g, grad_a


def _crop(s_full: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """The first half of each token axis: the real outputs of the zero-padded convolution."""
    return s_full[(..., *(slice(0, size // 2) for size in sizes))]


def toeplitz_apply(g_PHL: torch.Tensor, a_NHxT: torch.Tensor) -> torch.Tensor:
    """s_i = sum_j g(i - j) a_j along the last axis of a ([N, H, ..., T]), each member with
    its own g. g_PHL holds g on the circle of L = 2T points: g[n] = g(n) for n < T and
    g(n - 2T) for n > T (g[T] is never read). On a grid, a is [N, H, ..., Y, X] and g is
    [P, H, 2Y, 2X], laid out that way along each axis: s_(y,x) = sum g(y-m, x-n) a_(m,n)."""
    return _ToeplitzConvolution.apply(g_PHL, a_NHxT)
