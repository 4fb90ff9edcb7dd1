"""The gradient exchange: error feedback + compressor + one collective per step.

Shape legend:
  W  workers (world size)      P  members in the group
  N  coordinates per member in one bucket (a parameter, or all of them for scope=global)
  k  coordinates sent per member in one bucket
  K  sum of k over all buckets (everything one worker sends in a step, per member)
  T  sum of N over all buckets

One step, on every worker (`GradientExchange.exchange`):
  1. bucket the `name -> [P, ...]` gradients into `[P, N]` tensors, sorted by name;
  2. per bucket: acc = residual + grad; payload = compress(acc); residual = acc - sent;
  3. move all payloads with ONE collective, chosen by the wire pattern:
       dense        (method none, or warm-up): concat values -> [P, T], all-reduce sum
       values_only  (shared random-k):        concat values -> [P, K], all-reduce sum;
                                               indices are identical on every worker
       sparse       (top-k, independent random-k): concat values and int32 indices ->
                                               [P, K] each, packed into one byte buffer,
                                               all-gather -> [W, P, K] each,
                                               scatter-add worker by worker
  4. divide by W: the average of what the workers sent, dense again, per parameter.

Every worker computes bit-identical averages: sums run in the same order everywhere
(the all-reduce result is the same on all ranks; the scatter-add goes over workers in
rank order, and each single scatter has distinct indices per row, so no atomics race).

Error feedback works on gradients, not on lr-scaled updates as in Stich et al.'s code:
the optimizer after the exchange may be Adam, and PBT may change learning rates.

Use from a DeepSpeed loop (ZeRO stage 0: gradients must live in `param.grad`):

    engine.enable_backward_allreduce = False          # we exchange instead (as 1-bit Adam)
    exchange = GradientExchange(config=cfg, communicator=TorchCommunicator(), seed=seed)
    params = {n: p for n, p in engine.module.named_parameters() if p.requires_grad}
    for batch in loader:
        engine.backward(engine(batch))
        if engine.is_gradient_accumulation_boundary():
            grads = {n: p.grad if p.grad is not None else torch.zeros_like(p)
                     for n, p in params.items()}  # same names on every worker
            report = exchange.exchange_(grads, step=engine.global_steps)  # averaged in place
            for n, p in params.items():
                p.grad = grads[n]                 # no-op unless a zero grad was filled in
        engine.step()

`step` must be the same number on every worker (it seeds shared random-k). Residuals
differ per worker, so checkpoint `exchange.state_dict()` per rank; on a PBT exploit all
workers call `exchange.copy_member_(loser, winner)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch

from compression import (
    ByteReport,
    CompressionConfig,
    Compressor,
    ErrorFeedback,
    GradLayout,
    Payload,
    build_compressor,
    byte_report,
    decompress,
    dense_compressor,
)

from .communicators import Communicator


@dataclass(frozen=True)
class ExchangeResult:
    grads: dict[str, torch.Tensor]  # averaged dense gradients, name -> [P, ...], sorted by name
    bytes: ByteReport  # what this worker sent, per member
    payloads: dict[str, Payload]  # this worker's own payloads by bucket id (for tests and logs)


class GradientExchange:
    """Averages `[P, ...]` gradients over the workers of `communicator`, compressed.

    Build one per training run, on every worker, with the same config and seed. Keep it
    for the whole run: it holds the error-feedback residuals (checkpoint them with
    `state_dict()`; on a PBT exploit call `copy_member_(loser, winner)`).
    """

    def __init__(
        self,
        *,
        config: CompressionConfig,
        communicator: Communicator,
        seed: int = 0,
    ) -> None:
        self.config = config
        self.comm = communicator
        self.seed = seed
        self.compressor: Compressor = build_compressor(config, seed=seed, rank=communicator.rank)
        self._warmup_compressor = dense_compressor()
        self.error_feedback = ErrorFeedback(enabled=config.error_feedback)
        self._layout: GradLayout | None = None

    # -- the step -----------------------------------------------------------------------

    def compressor_for(self, step: int) -> Compressor:
        """Exact dense fp32 during warm-up; the configured compressor afterwards."""
        if self.config.method != "none" and self.config.is_dense(step):
            return self._warmup_compressor
        return self.compressor

    @torch.no_grad()
    def exchange(self, grads: Mapping[str, torch.Tensor], *, step: int) -> ExchangeResult:
        """Average `grads` (name -> [P, ...]) over all workers; inputs are not modified."""
        layout = self._layout_for(grads)
        compressor = self.compressor_for(step)
        payloads: dict[str, Payload] = {}
        acc_dtypes: dict[str, torch.dtype] = {}
        for bucket_id, grad_PN in layout.flatten(grads):
            compress = lambda acc_PN, i=bucket_id: compressor.compress(acc_PN, step=step, tensor_id=i)
            payloads[bucket_id] = self.error_feedback.step(bucket_id, grad_PN, compress)
            acc_dtypes[bucket_id] = torch.promote_types(grad_PN.dtype, torch.float32)

        if not payloads:
            averaged: dict[str, torch.Tensor] = {}
        elif compressor.wire == "sparse":
            averaged = self._sparse_all_gather(payloads, acc_dtypes)
        else:  # "dense" and "values_only": the values can simply be summed
            averaged = self._values_all_reduce(payloads, acc_dtypes)

        report = byte_report(
            payloads.values(), members=layout.P, dense_step=compressor.wire == "dense"
        )
        return ExchangeResult(layout.unflatten(averaged), report, payloads)

    def exchange_(self, grads: Mapping[str, torch.Tensor], *, step: int) -> ByteReport:
        """Like `exchange`, but writes the averages back into the `grads` tensors."""
        result = self.exchange(grads, step=step)
        for name, avg in result.grads.items():
            grads[name].copy_(avg)
        return result.bytes

    # -- the three wire patterns --------------------------------------------------------

    def _values_all_reduce(self, payloads: dict[str, Payload], acc_dtypes) -> dict[str, torch.Tensor]:
        """dense / values_only: one all-reduce of all values, concatenated per member."""
        ids = list(payloads)
        values_PK = torch.cat([payloads[i].values_Pk for i in ids], dim=1)
        self.comm.all_reduce_sum_(values_PK)
        out, start = {}, 0
        for i in ids:
            p = payloads[i]
            k = p.values_Pk.shape[1]
            summed = p.with_values(values_PK[:, start : start + k])
            out[i] = decompress(summed, acc_dtypes[i]).div_(self.comm.world_size)
            start += k
        return out

    def _sparse_all_gather(self, payloads: dict[str, Payload], acc_dtypes) -> dict[str, torch.Tensor]:
        """sparse: ONE all-gather of values and indices packed as bytes, then scatter-add."""
        ids = list(payloads)
        values_PK = torch.cat([payloads[i].values_Pk for i in ids], dim=1)
        idx_PK = torch.cat([payloads[i].idx_Pk for i in ids], dim=1)
        # Pack both into one byte buffer so a step costs one collective, not two.
        packed_B = torch.cat([values_PK.reshape(-1).view(torch.uint8), idx_PK.reshape(-1).view(torch.uint8)])
        packed_WB = self.comm.all_gather(packed_B)
        W, split = self.comm.world_size, values_PK.numel() * values_PK.element_size()
        values_WPK = packed_WB[:, :split].contiguous().view(values_PK.dtype).view(W, *values_PK.shape)
        idx_WPK = packed_WB[:, split:].contiguous().view(idx_PK.dtype).view(W, *idx_PK.shape).long()
        out, start = {}, 0
        for i in ids:
            p = payloads[i]
            k = p.values_Pk.shape[1]
            sl = slice(start, start + k)
            dense_PN = torch.zeros(p.shape_PN, dtype=acc_dtypes[i], device=values_PK.device)
            for w in range(W):  # rank order: the same float sums on every worker
                dense_PN.scatter_add_(1, idx_WPK[w, :, sl], values_WPK[w, :, sl].to(dense_PN.dtype))
            out[i] = dense_PN.div_(W)
            start += k
        return out

    # -- state --------------------------------------------------------------------------

    def _layout_for(self, grads: Mapping[str, torch.Tensor]) -> GradLayout:
        if self._layout is None or not self._layout.matches(grads):
            self._layout = GradLayout.from_grads(grads, self.config.scope)
        return self._layout

    def copy_member_(self, dst: int, src: int) -> None:
        """PBT exploit: member `dst` takes member `src`'s error-feedback residual."""
        self.error_feedback.copy_member_(dst, src)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Error-feedback residuals only (tensors; `torch.load(weights_only=True)` works)."""
        return self.error_feedback.state_dict()

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.error_feedback.load_state_dict(dict(state))
