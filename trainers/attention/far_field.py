"""The far field of a clamped relative-position mask: every offset |i - t| >= D = max_offset
has the same mask value, c+ = f(D) after the query (i - t >= D) and c- = f(-D) before it
(t - i >= D; unused when causal), so that part of the masked readout is a delayed prefix sum:

  s_far(i) = c+ sum_{t <= i - D} a(t) + c- sum_{t >= i + D} a(t),   a(t) = phi_k(t) v(t)^T
  y_far(i) = phi_q(i)^T s_far(i)
           = c+ [causal readout of (phi_q[D:], phi_k[:T-D], v[:T-D])] at i - D
           + c- [anti-causal readout of (phi_q[:T-D], phi_k[D:], v[D:])] at i

Each readout is un-normalized linear attention over sequences shifted by D (views: nothing is
copied), by chunked prefix sums as the `linear` kind's (chunked.py): inside a chunk of
`chunk_size` tokens the masked quadratic form, across chunks one running [M, J] state, so
O(T (chunk + M) J), linear in T, and never a [T, M, J] tensor. The backward is written by hand
and keeps nothing but the inputs: it re-runs the scan for grad q and grad c, and runs it the
other way for grad k, grad v (autograd through the chunks kept 300 MB more at 16K tokens).
Rounding: that of prefix sums (relative to the sum so far); the near field's (|i - t| < D,
toeplitz.py) is relative to its frame.

Legend: R rows (sequence, head), T tokens, n = T - D shifted tokens, M features of phi, J value
columns, D = max_offset.
"""
import torch


def add_far_field_(y_RJT, phi_q_RMT, phi_k_RMT, v_RJT, c_R2, *, max_offset: int, causal: bool,
                   chunk_size: int) -> None:
    """y += y_far (all [R, M or J, T]; c_R2 holds (c+, c-) per row). Nothing to add when
    T <= D: no offset reaches the far field. No autograd: toeplitz's readout calls it and
    `far_field_backward_`."""
    for shift_y, shifted, c_R, reverse in _parts(y_RJT, phi_q_RMT, phi_k_RMT, v_RJT, c_R2, max_offset, causal):
        q_RnM, k_RnM, v_RnJ = shifted
        for rows, A_RLL, state_RMJ in _scan(q_RnM, k_RnM, v_RnJ, chunk_size, reverse):
            y_RnJ = shift_y[:, rows]
            y_RnJ += torch.baddbmm(A_RLL @ v_RnJ[:, rows], q_RnM[:, rows], state_RMJ).mul_(c_R[:, None, None])


def far_field_backward_(grad_y_RJT, phi_q_RMT, phi_k_RMT, v_RJT, c_R2, grad_q_RMT, grad_k_RMT, grad_v_RJT, *,
                        max_offset: int, causal: bool, chunk_size: int) -> torch.Tensor:
    """Adds the far field's part of grad q, k, v into the given gradients; returns grad c [R, 2]."""
    grad_c_R2 = torch.zeros_like(c_R2)
    grads = (grad_q_RMT, grad_k_RMT, grad_v_RJT)
    for part, (grad_y_RnJ, (q_RnM, k_RnM, v_RnJ), c_R, reverse) in enumerate(
            _parts(grad_y_RJT, phi_q_RMT, phi_k_RMT, v_RJT, c_R2, max_offset, causal)):
        grad_q, grad_k, grad_v = _shifted(*(g.mT for g in grads), max_offset, reverse)  # views: += lands in grads
        mask = torch.triu if reverse else torch.tril
        c_R11 = c_R[:, None, None]
        for rows, A_RLL, state_RMJ in _scan(q_RnM, k_RnM, v_RnJ, chunk_size, reverse):
            q_RLM, k_RLM, v_RLJ = q_RnM[:, rows], k_RnM[:, rows], v_RnJ[:, rows]
            grad_RLJ = grad_y_RnJ[:, rows] * c_R11  # the gradient of the unscaled readout
            y_RLJ = torch.baddbmm(A_RLL @ v_RLJ, q_RLM, state_RMJ)
            grad_c_R2[:, part] += (grad_y_RnJ[:, rows] * y_RLJ).sum((1, 2))
            grad_A_RLL = mask(grad_RLJ @ v_RLJ.mT)
            grad_q[:, rows] += torch.baddbmm(grad_A_RLL @ k_RLM, grad_RLJ, state_RMJ.mT)
            grad_k[:, rows] += grad_A_RLL.mT @ q_RLM
            grad_v[:, rows] += A_RLL.mT @ grad_RLJ
        # Chunk g's keys and values reach every later chunk's outputs (in scan order) through
        # sum_h q_h^T grad_h over those chunks: the scan run the other way.
        later_RMJ = q_RnM.new_zeros(q_RnM.shape[0], q_RnM.shape[2], v_RnJ.shape[2])
        for rows in reversed(_chunks(q_RnM.shape[1], chunk_size, reverse)):
            grad_k[:, rows].baddbmm_(v_RnJ[:, rows], later_RMJ.mT)
            grad_v[:, rows].baddbmm_(k_RnM[:, rows], later_RMJ)
            later_RMJ.baddbmm_(q_RnM[:, rows].mT, grad_y_RnJ[:, rows] * c_R11)
    return grad_c_R2


def _parts(y_RJT, phi_q_RMT, phi_k_RMT, v_RJT, c_R2, D, causal):
    """Per part of the far field (after the query; before it unless causal): the outputs it
    adds to ([R, n, J] view of y), the shifted (q, k, v) token-major views, its c and direction."""
    T = v_RJT.shape[-1]
    if T <= D:
        return []
    tensors = (phi_q_RMT.mT, phi_k_RMT.mT, v_RJT.mT)
    parts = [(y_RJT.mT[:, D:], _shifted(*tensors, D, False), c_R2[:, 0], False)]
    if not causal:
        parts.append((y_RJT.mT[:, :T - D], _shifted(*tensors, D, True), c_R2[:, 1], True))
    return parts


def _shifted(q_RTM, k_RTM, v_RTJ, shift, reverse):
    """The queries and the keys and values they read, `shift` tokens apart (views):
    y(u) = q(u + D) . sum_{s <= u} k(s) v(s)^T, or reversed y(u) = q(u) . sum_{s >= u} k(s + D) v(s + D)^T."""
    T = q_RTM.shape[1]
    if reverse:
        return q_RTM[:, :T - shift], k_RTM[:, shift:], v_RTJ[:, shift:]
    return q_RTM[:, shift:], k_RTM[:, :T - shift], v_RTJ[:, :T - shift]


def _chunks(length: int, chunk_size: int, reverse: bool) -> list[slice]:
    """The chunks of 0 .. length-1 in scan order (last first when `reverse`)."""
    chunks = [slice(start, min(start + chunk_size, length)) for start in range(0, length, chunk_size)]
    return chunks[::-1] if reverse else chunks


def _scan(q_RnM, k_RnM, v_RnJ, chunk_size, reverse):
    """Yields, per chunk in scan order, its rows, its masked q k^T ([R, L, L]: s <= u, or s >= u
    when `reverse`) and the state sum k^T v of the chunks before it in scan order ([R, M, J]:
    one buffer, updated in place after the yield)."""
    state_RMJ = q_RnM.new_zeros(q_RnM.shape[0], q_RnM.shape[2], v_RnJ.shape[2])
    mask = torch.triu if reverse else torch.tril
    for rows in _chunks(q_RnM.shape[1], chunk_size, reverse):
        yield rows, mask(q_RnM[:, rows] @ k_RnM[:, rows].mT), state_RMJ
        state_RMJ.baddbmm_(k_RnM[:, rows].mT, v_RnJ[:, rows])
