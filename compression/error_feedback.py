"""Error feedback: what was not sent is kept and added back next step.

Shape legend:
  P  members in the group,  N  coordinates per member in one tensor (or bucket)

Per tensor id, each step (Stich, Cordonnier & Jaggi 2018, "memory"):
  acc_PN      = residual_PN + grad_PN
  payload     = compress(acc_PN)
  residual_PN = acc_PN - decompress(payload)

`decompress(payload)` is what was *actually* sent, after the values were cast to the wire
dtype, so fp16/bf16 rounding error lands in the residual too. Hence, exactly per step,
`sent + residual_new == residual_old + grad`, and over any number of steps
`sum(sent) + residual == sum(grads)`: nothing is lost, only delayed.

Unlike Stich et al.'s code (memory of lr-scaled updates) this memory holds gradients,
so the optimizer after the exchange can be Adam and PBT can change learning rates.

The residual is per member (leading P axis), so a PBT exploit can copy a winner's
residual onto a loser together with its weights and optimizer state (`copy_member_`).
"""

from __future__ import annotations

from typing import Callable

import torch

from .compressors import Payload, decompress

_PREFIX = "residual."


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """Residuals are kept in at least fp32: a bf16 residual would lose what it holds."""
    return torch.promote_types(dtype, torch.float32)


class ErrorFeedback:
    """Residual memory keyed by tensor id; each residual is `[P, N]` (one row per member).

    With `enabled=False` it is a pass-through: nothing is kept, `residual()` is None and
    the state dict is empty.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._residual: dict[str, torch.Tensor] = {}

    # -- the per-step cycle -------------------------------------------------------------

    def compensate(self, tensor_id: str, grad_PN: torch.Tensor) -> torch.Tensor:
        """acc_PN = residual_PN + grad_PN (a new tensor, at least fp32; grad is not modified)."""
        # Contiguous, so the sparse update below can work on its flat view in place.
        acc_PN = grad_PN.to(accumulation_dtype(grad_PN.dtype), copy=True, memory_format=torch.contiguous_format)
        residual_PN = self._matching_residual(tensor_id, grad_PN)
        if residual_PN is not None:
            acc_PN += residual_PN.to(device=acc_PN.device, dtype=acc_PN.dtype)
        return acc_PN

    def _matching_residual(self, tensor_id: str, grad_PN: torch.Tensor) -> torch.Tensor | None:
        residual_PN = self._residual.get(tensor_id) if self.enabled else None
        if residual_PN is not None and residual_PN.shape != grad_PN.shape:
            raise ValueError(
                f"error-feedback residual for {tensor_id!r} has shape "
                f"{tuple(residual_PN.shape)} but the gradient has {tuple(grad_PN.shape)}; "
                "the parameter set changed: call reset() or load a matching state dict"
            )
        return residual_PN

    def update(self, tensor_id: str, acc_PN: torch.Tensor, sent_PN: torch.Tensor) -> None:
        """residual_PN = acc_PN - sent_PN (no-op when disabled)."""
        if self.enabled:
            self._residual[tensor_id] = acc_PN - sent_PN.to(acc_PN.dtype)

    def step(
        self,
        tensor_id: str,
        grad_PN: torch.Tensor,
        compress: Callable[[torch.Tensor], Payload],
    ) -> Payload:
        """One full cycle: compensate, compress, keep what was not sent. Returns the payload.

        In place, as one pass over the tensor: the residual accumulates the gradient
        (`residual += grad`, the same sum as `grad + residual`) and, once the sent entries
        are taken out of it, is the next residual. `grad_PN` is not modified; the first
        step copies it (it becomes the residual), a lossless dense step reads it as it is.
        """
        acc_PN = self._accumulate_(tensor_id, grad_PN)
        payload = compress(acc_PN)
        if not self.enabled:
            return payload
        if payload.idx_K is None:
            if payload.values_K.dtype == acc_PN.dtype:
                # Lossless (dense, same dtype): the residual would be all zeros; keep none
                # rather than a model-sized buffer of zeros (dense training, warm-up).
                self._residual.pop(tensor_id, None)
            else:
                self.update(tensor_id, acc_PN, decompress(payload, acc_PN.dtype))
        else:
            # Sparse: residual = acc - decompress(payload), in acc's buffer: only the sent
            # entries change (bit-identical to the dense formula, without a dense zeros +
            # scatter + subtract per step).
            if acc_PN is not self._residual.get(tensor_id):  # the gradient itself: not ours to change
                acc_PN = acc_PN.clone(memory_format=torch.contiguous_format)
            pos_K = payload.flat_idx()
            acc_N = acc_PN.view(-1)
            sent_K = payload.values_K.to(acc_PN.dtype)
            acc_N.scatter_(0, pos_K, acc_N.gather(0, pos_K) - sent_K)
            self._residual[tensor_id] = acc_PN
        return payload

    def _accumulate_(self, tensor_id: str, grad_PN: torch.Tensor) -> torch.Tensor:
        """The residual plus the gradient, summed into the residual; without a residual,
        the gradient itself (at least fp32: a copy only when its dtype is narrower)."""
        residual_PN = self._matching_residual(tensor_id, grad_PN)
        if residual_PN is None:
            return grad_PN.to(accumulation_dtype(grad_PN.dtype), memory_format=torch.contiguous_format)
        want = accumulation_dtype(grad_PN.dtype)
        if residual_PN.device != grad_PN.device or residual_PN.dtype != want:  # e.g. loaded on the host
            residual_PN = self._residual[tensor_id] = residual_PN.to(device=grad_PN.device, dtype=want)
        return residual_PN.add_(grad_PN)

    # -- inspection, PBT and checkpoints ------------------------------------------------

    def residual(self, tensor_id: str) -> torch.Tensor | None:
        return self._residual.get(tensor_id)

    def tensor_ids(self) -> list[str]:
        return sorted(self._residual)

    def reset(self) -> None:
        self._residual.clear()

    @torch.no_grad()
    def copy_member_(self, dst: int, src: int) -> None:
        """Member `dst` takes member `src`'s residual, in place, in every tensor (PBT exploit)."""
        for residual_PN in self._residual.values():
            residual_PN[dst].copy_(residual_PN[src])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """`{"residual.<tensor id>": [P, N] tensor}`; tensors only, so `torch.load(weights_only=True)` works."""
        return {_PREFIX + tid: r.detach().clone() for tid, r in sorted(self._residual.items())}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        bad = [key for key in state if not key.startswith(_PREFIX)]
        if bad:
            raise KeyError(f"unexpected keys in error-feedback state (expected '{_PREFIX}<id>'): {bad}")
        self._residual = {
            key[len(_PREFIX) :]: t.detach().clone() for key, t in state.items()
        } if self.enabled else {}
