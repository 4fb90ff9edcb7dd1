"""Chunked prefix sums: the causal form shared by linear, performer and flash.

Legend: x = one or more leading axes (N, H for kernels; P, B for flash), X = those
flattened into one, T tokens, G chunks, L tokens per chunk, M feature dim of phi(k) (or
flash's s), J value dim (K + 1 when a ones column carries the normalizer).

Causal linear attention needs S_t = sum_{s<=t} phi(k_s) v_s^T at every t. A per-token
cumsum materializes [T, M, J] per head; instead the sequence is cut into G = T/L chunks:
inside a chunk the masked quadratic form costs L*L, across chunks one running state
[M, J] is carried from chunk to chunk (a scan over G). Cost O(T*L*M + T*M*J), extra
memory O(T*L + M*J): linear in T for a fixed chunk size, with no [G, M, J] stack of
per-chunk states (on CPU, allocating and summing that stack cost more than the products).
"""
import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


def split_chunks(x_xTD: torch.Tensor, chunk_size: int) -> torch.Tensor:
    """[..., T, D] -> [..., G, L, D], zero-padding T up to a multiple of L."""
    pad = -x_xTD.shape[-2] % chunk_size
    if pad:  # F.pad copies even when it adds nothing
        x_xTD = F.pad(x_xTD, (0, 0, 0, pad))
    return x_xTD.unflatten(-2, (-1, chunk_size))


def merge_chunks(x_xGLD: torch.Tensor, length: int) -> torch.Tensor:
    """[..., G, L, D] -> [..., T, D], dropping the padding rows."""
    return x_xGLD.flatten(-3, -2)[..., :length, :]


class _CrossChunkScan(torch.autograd.Function):
    """out_g = q_g @ sum_{j<g} k_j^T v_j for every chunk g, carrying one running state.

    Autograd through a Python loop would save the state of every chunk; this backward
    instead re-runs the forward scan for dq and a reverse scan for dk, dv. The leading
    axes are flattened into one (X) and results are written chunk-major ([G, X, ...]),
    so every step is one bmm into a contiguous slice, with no temporaries.
    """

    @staticmethod
    def forward(ctx, q_xGLM, k_xGLM, v_xGLJ):
        ctx.save_for_backward(q_xGLM, k_xGLM, v_xGLJ)
        q_XGLM, k_XGLM, v_XGLJ = (x.flatten(0, -4) for x in (q_xGLM, k_xGLM, v_xGLJ))
        out_GXLJ = _chunk_major_empty(q_XGLM, v_XGLJ.shape[-1])
        for g, state_XMJ in enumerate(_states_before(k_XGLM, v_XGLJ)):
            torch.bmm(q_XGLM[:, g], state_XMJ, out=out_GXLJ[g])
        return _batch_major(out_GXLJ, q_xGLM.shape[:-3])

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_xGLJ):
        q_xGLM, k_xGLM, v_xGLJ = ctx.saved_tensors
        q_XGLM, k_XGLM, v_XGLJ, grad_XGLJ = (x.flatten(0, -4) for x in (q_xGLM, k_xGLM, v_xGLJ, grad_xGLJ))
        grad_q_GXLM, grad_k_GXLM = (_chunk_major_empty(q_XGLM, q_XGLM.shape[-1]) for _ in range(2))
        grad_v_GXLJ = _chunk_major_empty(q_XGLM, v_XGLJ.shape[-1])
        for g, state_XMJ in enumerate(_states_before(k_XGLM, v_XGLJ)):
            torch.bmm(grad_XGLJ[:, g], state_XMJ.transpose(1, 2), out=grad_q_GXLM[g])
        # Chunk g's keys and values reach the outputs of every later chunk h through
        # sum_{h>g} q_h^T grad_h: a scan from the last chunk backwards.
        later_XMJ = q_XGLM.new_zeros(q_XGLM.shape[0], q_XGLM.shape[-1], v_XGLJ.shape[-1])
        for g in reversed(range(q_XGLM.shape[1])):
            torch.bmm(v_XGLJ[:, g], later_XMJ.transpose(1, 2), out=grad_k_GXLM[g])
            torch.bmm(k_XGLM[:, g], later_XMJ, out=grad_v_GXLJ[g])
            later_XMJ.baddbmm_(q_XGLM[:, g].transpose(1, 2), grad_XGLJ[:, g])
        lead = q_xGLM.shape[:-3]
        return tuple(_batch_major(x, lead) for x in (grad_q_GXLM, grad_k_GXLM, grad_v_GXLJ))


def _states_before(k_XGLM: torch.Tensor, v_XGLJ: torch.Tensor):
    """Yields sum_{j<g} k_j^T v_j ([X, M, J]) for g = 0, 1, ..., G-1: one buffer, updated in place."""
    state_XMJ = k_XGLM.new_zeros(k_XGLM.shape[0], k_XGLM.shape[-1], v_XGLJ.shape[-1])
    for g in range(k_XGLM.shape[1]):
        yield state_XMJ
        state_XMJ.baddbmm_(k_XGLM[:, g].transpose(1, 2), v_XGLJ[:, g])


def _chunk_major_empty(like_XGLD: torch.Tensor, width: int) -> torch.Tensor:
    X, G, L, _ = like_XGLD.shape
    return like_XGLD.new_empty(G, X, L, width)


def _batch_major(x_GXLD: torch.Tensor, lead: torch.Size) -> torch.Tensor:
    """[G, X, L, D] -> [*lead, G, L, D] (a view)."""
    return x_GXLD.transpose(0, 1).unflatten(0, lead)


def cross_chunk_attention(q_xGLM: torch.Tensor, k_xGLM: torch.Tensor, v_xGLJ: torch.Tensor) -> torch.Tensor:
    """[..., G, L, J]: each query against the keys and values of all EARLIER chunks,
    q_g @ sum_{j<g} k_j^T v_j (un-normalized linear attention)."""
    return _CrossChunkScan.apply(q_xGLM, k_xGLM, v_xGLJ)


def feature_map_attention(phi_q_NHTM: torch.Tensor, phi_k_NHTM: torch.Tensor, v_NHTK: torch.Tensor, *,
                          causal: bool, chunk_size: int, eps: float,
                          key_mask_NT: torch.Tensor | None = None) -> torch.Tensor:
    """out_t = phi(q_t) . sum_s phi(k_s) v_s / phi(q_t) . sum_s phi(k_s), s over all real
    tokens or real s <= t; phi must be non-negative. The normalizer is clamped at `eps`.
    `key_mask_NT` (True = real token) zeroes phi(k) at padding, which then adds nothing to
    numerator or normalizer.
    """
    T = v_NHTK.shape[-2]
    if key_mask_NT is not None:
        phi_k_NHTM = phi_k_NHTM * key_mask_NT[:, None, :, None]
    # A ones column on v makes the normalizer sum_s phi(k_s) ride along as output column K.
    v_NHTJ = F.pad(v_NHTK, (0, 1), value=1.0)
    if causal:
        q_NHGLM, k_NHGLM, v_NHGLJ = (split_chunks(x, chunk_size) for x in (phi_q_NHTM, phi_k_NHTM, v_NHTJ))
        # Zero-padded keys have phi = 0, so the padding adds nothing to any state.
        within_NHGLL = (q_NHGLM @ k_NHGLM.transpose(-2, -1)).tril()  # s <= t inside the chunk
        out_NHGLJ = within_NHGLL @ v_NHGLJ + cross_chunk_attention(q_NHGLM, k_NHGLM, v_NHGLJ)
        out_NHTJ = merge_chunks(out_NHGLJ, T)
    else:
        out_NHTJ = phi_q_NHTM @ (phi_k_NHTM.transpose(-2, -1) @ v_NHTJ)
    return out_NHTJ[..., :-1] / out_NHTJ[..., -1:].clamp_min(eps)
