"""The gradient exchange: error feedback + compressor + one collective per step.

Shape legend:
  W  workers (world size)      P  members in the group
  N  coordinates per member in one bucket (a parameter, or all of them for scope=global)
  k  coordinates sent per member in one bucket (k_P[p] for member p: densities may differ)
  K  everything one worker sends in a step: sum over buckets and members of k
  T  P times the sum of N over all buckets (the dense gradient)

One step, on every worker (`GradientExchange.exchange_`):
  1. bucket the `name -> [P, ...]` gradients into `[P, N]` tensors, sorted by name
     (layerwise: views of the gradients, no copy);
  2. per bucket, in place (compression/error_feedback.py): residual += grad (the
     residual's own buffer is the accumulator); payload = compress(residual); residual -=
     sent, at the sent entries only;
  3. move all payloads with ONE collective, the method's (compression/methods.py);
     dense steps (method none, warm-up) all-reduce:
       all-reduce      (dense: concat values -> [T]; shared random-k: concat values ->
                       [K], the indices are identical on every worker): sum
       all-gather      (top-k, independent random-k): concat values and int32 indices
                       -> [K] each, packed into one byte buffer, all-gather -> [W, K]
                       each, scatter-add worker by worker
       2 all-reduces   (PowerSGD, distrib/powersgd_exchange.py): of the P factors (with
                       the dense 1-D tensors) and then of the Q factors
  4. divide by W: the average of what the workers sent, dense again, per parameter,
     written straight into the gradient (layerwise): the dense sum / W in one pass, or the
     gradient zeroed and the received entries scattered in (divided where something was
     sent, not over all of it); a global bucket is averaged beside and copied back.
Steps 2 and 4 were two extra model-sized passes each (a copy of grad into a new acc,
a new dense average copied into grad): see docs/cluster.md, "The exchange in place".

The same steps can run during backward, bucket by bucket, each bucket's collective
started (`start`) as soon as its gradients are final and waited (`finish_into`) before
the optimizer step: distrib/overlap.py (`compression.overlap`), with the same result.

Per-member densities (`exchange(..., density_P=)`, PBT mutating `density`): member p
sends k_P[p] = round(density_P[p] * N) coordinates of each bucket. A payload's rows are
concatenated, bucket after bucket, without padding, so the buffer holds exactly K
entries and every byte counted in `bytes_sent` is a byte on the wire. All workers know
every member's density (hyperparameters are identical on every worker), hence every k,
so their buffers have the same shape and the row of each received entry is implied by
its position: an index travels as its column only. One density for all members is the
same layout with equal k.

Every worker computes bit-identical averages: sums run in the same order everywhere
(the all-reduce result is the same on all ranks; the scatter-add goes over workers in
rank order, and each single scatter has distinct positions, so no atomics race; the
division at the sent positions may meet a position several workers sent, and writes the
same quotient each time).

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
            report = exchange.exchange_(grads, step=engine.global_steps,  # averaged in place
                                        density_P=member_densities)  # optional, [P]
            for n, p in params.items():
                p.grad = grads[n]                 # no-op unless a zero grad was filled in
        engine.step()

(distrib/deepspeed_glue.py does this; distrib/overlap.py the same during backward.)

`step` must be the same number on every worker (it seeds shared random-k). Residuals
differ per worker, so checkpoint `exchange.state_dict()` per rank; on a PBT exploit all
workers call `exchange.copy_member_(loser, winner)`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Mapping

import torch

from compression import (
    METHODS,
    ByteReport,
    Collective,
    CompressionConfig,
    Compressor,
    ErrorFeedback,
    GradLayout,
    NoCompressor,
    Payload,
    build_compressor,
    byte_report,
    flat_positions,
)
from compression.error_feedback import accumulation_dtype

from .communicators import Communicator, Pending
from .powersgd_exchange import WARM_START_PREFIX, PowerSGDExchange, Round


@dataclass(frozen=True)
class ExchangeResult:
    grads: dict[str, torch.Tensor]  # averaged dense gradients, name -> [P, ...], sorted by name
    bytes: ByteReport  # what this worker sent, per member
    payloads: dict[str, Payload]  # this worker's own payloads by bucket id (for tests and logs)


@dataclass(frozen=True)
class StepPlan:
    """How one step's payloads are made and moved (the same on every worker)."""

    step: int
    compressor: Compressor
    collective: Collective
    dense: bool  # method none or warm-up: everything, exact fp32
    density_P: list[float] | None  # each member's density (PBT's), or None for config.density


@dataclass
class InFlight:
    """Payloads whose collective has started; `GradientExchange.finish_into` completes it."""

    payloads: dict[str, Payload]  # by bucket id, in the order packed
    collective: Collective
    pending: Pending


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
        self.collective = METHODS[config.method].collective(config.randomk_mode)  # of compressed steps
        # Two all-reduces (PowerSGD) interleave with compute: no Payload compressor but an
        # exchange of its own, self.powersgd, and only the dense warm-up compressor.
        two = self.collective is Collective.TWO_ALL_REDUCES
        self.compressor: Compressor | None = (
            None if two else build_compressor(config, seed=seed, rank=communicator.rank))
        self._warmup_compressor = NoCompressor()  # exact dense fp32, whatever the configured method
        self.error_feedback = ErrorFeedback(enabled=config.error_feedback)
        self.powersgd = (PowerSGDExchange(config=config, communicator=communicator,
                                          error_feedback=self.error_feedback, seed=seed) if two else None)
        self._layout: GradLayout | None = None
        self.last_payloads: dict[str, Payload] = {}  # this worker's, of the last step, by bucket id (tests, logs)

    # -- the step -----------------------------------------------------------------------

    def plan(self, step: int, density_P: Sequence[float] | None = None) -> StepPlan:
        """Step `step`'s compressor and collective; `density_P` as in `exchange`."""
        dense = self.config.is_dense(step)
        # Warm-up sends exact dense fp32; dense steps send everything whatever the densities
        # (the spec refuses density mutations for methods without a density).
        compressor = self._warmup_compressor if dense and self.config.method != "none" else self.compressor
        densities = None if density_P is None else [float(d) for d in density_P]
        return StepPlan(step, compressor, Collective.ALL_REDUCE if dense else self.collective, dense, densities)

    @torch.no_grad()
    def exchange(self, grads: Mapping[str, torch.Tensor], *, step: int,
                 density_P: Sequence[float] | None = None) -> ExchangeResult:
        """Average `grads` (name -> [P, ...]) over all workers; inputs are not modified.

        `density_P`: each member's density (the same list on every worker), overriding
        `config.density`; ignored by dense steps (method none, warm-up).
        """
        averaged = {name: grads[name].clone(memory_format=torch.contiguous_format) for name in sorted(grads)}
        report, payloads = self._exchange_into_(averaged, step=step, density_P=density_P)
        return ExchangeResult(averaged, report, payloads)

    @torch.no_grad()
    def exchange_(self, grads: Mapping[str, torch.Tensor], *, step: int,
                  density_P: Sequence[float] | None = None) -> ByteReport:
        """Like `exchange`, but writes the averages into the `grads` tensors themselves:
        each layerwise bucket's average is scattered straight into its gradient."""
        return self._exchange_into_(grads, step=step, density_P=density_P)[0]

    def _exchange_into_(self, grads: Mapping[str, torch.Tensor], *, step: int,
                        density_P: Sequence[float] | None) -> tuple[ByteReport, dict[str, Payload]]:
        layout = self._layout_for(grads)
        plan = self.plan(step, density_P)
        if plan.collective is Collective.TWO_ALL_REDUCES:
            averaged, report = self.powersgd.exchange(layout, grads, step=step)
            self.last_payloads = {}
            for bucket in layout.buckets:
                layout.write_back_(bucket, averaged[bucket.id], grads)
            return report, {}
        flats = layout.flatten(grads)
        payloads = self.last_payloads = {bucket_id: self.compress_bucket(plan, bucket_id, grad_PN)
                                         for bucket_id, grad_PN in flats}
        # Every payload is packed (copied) into the collective's buffer when it starts, so
        # the averages may then overwrite the gradients it was made from.
        in_flight = self.start(payloads, plan.collective)
        # A layerwise bucket's average goes straight into its gradient; a global bucket (or a
        # gradient narrower than fp32) is averaged into a new tensor and copied back.
        in_place = {b.id: layout.target(b, grads) for b in layout.buckets}
        targets = {bucket_id: in_place[bucket_id] if in_place[bucket_id] is not None else
                   torch.empty(grad_PN.shape, dtype=accumulation_dtype(grad_PN.dtype), device=grad_PN.device)
                   for bucket_id, grad_PN in flats}
        self.finish_into(in_flight, targets)
        for bucket in layout.buckets:
            if in_place[bucket.id] is None:
                layout.write_back_(bucket, targets[bucket.id], grads)
        return byte_report(payloads.values(), members=layout.P, dense_step=plan.dense), payloads

    def start_layerwise(self, plan: StepPlan, grads_PN: Mapping[str, torch.Tensor],
                        shapes: Mapping[str, tuple[int, ...]]) -> InFlight | Round:
        """Start the exchange of some layerwise buckets (distrib/overlap.py): `grads_PN`
        `{parameter name: [P, N]}`, `shapes` each one member's parameter shape (PowerSGD
        factorizes it). Their payloads join `last_payloads`; finish with `advance` (all
        of them first), then `finish_into`."""
        if plan.collective is Collective.TWO_ALL_REDUCES:
            return self.powersgd.start([(i, shapes[i], g) for i, g in grads_PN.items()], step=plan.step)
        payloads = {i: self.compress_bucket(plan, i, g) for i, g in grads_PN.items()}
        self.last_payloads.update(payloads)
        return self.start(payloads, plan.collective)

    def advance(self, in_flight: InFlight | Round) -> None:
        """PowerSGD: wait for the first all-reduce, start the second; others: nothing."""
        if isinstance(in_flight, Round):
            self.powersgd.advance(in_flight)

    def compress_bucket(self, plan: StepPlan, bucket_id: str, grad_PN: torch.Tensor) -> Payload:
        """One bucket's payload; its residual keeps, in place, what was not sent."""
        compress = partial(plan.compressor.compress, step=plan.step, tensor_id=bucket_id, density_P=plan.density_P)
        return self.error_feedback.step(bucket_id, grad_PN, compress)

    # -- the collectives (PowerSGD's two all-reduces: powersgd_exchange.py) ---------------

    def start(self, payloads: dict[str, Payload], collective: Collective) -> InFlight:
        """Pack `payloads` into one buffer and start its collective (not waiting):
          all-reduce   the values concatenated (dense, or shared indices): summed;
          all-gather   values and column indices packed as bytes into one buffer, so a
                       step costs one collective, not two."""
        values_K = torch.cat([p.values_K for p in payloads.values()]) if payloads else torch.empty(0)
        if collective is Collective.ALL_GATHER:
            idx_K = torch.cat([p.idx_K for p in payloads.values()]) if payloads else torch.empty(0, dtype=torch.int32)
            packed_B = torch.cat([values_K.view(torch.uint8), idx_K.view(torch.uint8)])
            return InFlight(payloads, collective, self.comm.start_all_gather(packed_B))
        return InFlight(payloads, collective, self.comm.start_all_reduce_sum_(values_K))

    def finish_into(self, in_flight: InFlight | Round, targets: Mapping[str, torch.Tensor]) -> None:
        """Wait for `in_flight` and write each bucket's average into `targets[bucket id]`
        (`[P, N]`, overwritten, in the dtype the average is summed in: at least fp32)."""
        if isinstance(in_flight, Round):  # PowerSGD, advanced: its averages are new tensors
            for i, average_PN in self.powersgd.finish(in_flight).items():
                targets[i].copy_(average_PN)
        elif not in_flight.payloads:
            in_flight.pending.wait()
        elif in_flight.collective is Collective.ALL_GATHER:
            self._scatter_gathered(in_flight, targets)
        else:
            self._write_summed(in_flight, targets)

    def _write_summed(self, in_flight: InFlight, targets: Mapping[str, torch.Tensor]) -> None:
        """all-reduce: each bucket's slice of the summed values, / W, at its positions."""
        values_K = in_flight.pending.wait()
        W, start = self.comm.world_size, 0
        for i, p in in_flight.payloads.items():
            n = p.values_K.numel()
            target_PN = targets[i]
            sum_K = values_K[start:start + n].to(target_PN.dtype)
            start += n
            if p.idx_K is None:  # dense: every coordinate, in order
                torch.div(sum_K.view(p.shape_PN), W, out=target_PN)
            else:  # shared random-k: zeros but at the shared positions
                target_PN.zero_().view(-1).scatter_(0, p.flat_idx(), sum_K / W)

    def _scatter_gathered(self, in_flight: InFlight, targets: Mapping[str, torch.Tensor]) -> None:
        """all-gather: every worker's entries scatter-added, worker by worker in rank order
        (the same float sums on every worker), then / W where any worker sent something:
        an entry no worker sent stays zero, as zero / W is."""
        payloads = in_flight.payloads
        packed_WB = in_flight.pending.wait()
        W = self.comm.world_size
        first = next(iter(payloads.values()))
        K = sum(p.values_K.numel() for p in payloads.values())
        split = K * first.values_K.element_size()
        values_WK = packed_WB[:, :split].contiguous().view(first.values_K.dtype)
        # A copy, not .contiguous(): with one worker the slice is already contiguous but
        # may start at an offset that is no multiple of 4 (an odd count of fp16 values).
        idx_WK = packed_WB[:, split:].clone(memory_format=torch.contiguous_format).view(first.idx_K.dtype)
        start = 0
        for i, p in payloads.items():
            sl = slice(start, start + p.idx_K.numel())
            start = sl.stop
            # Every worker's payload has this worker's layout (same k_P), so the row of
            # each entry follows from its position.
            pos_WK = flat_positions(idx_WK[:, sl], p.shape_PN, p.k_P)
            flat_dense = targets[i].zero_().view(-1)  # [P * N]
            for w in range(W):  # rank order: the same float sums on every worker
                flat_dense.scatter_add_(0, pos_WK[w], values_WK[w, sl].to(flat_dense.dtype))
            # Only the entries sent (W·K of them, positions may repeat: each writes the same
            # quotient), not a pass over all P·N.
            pos = pos_WK.reshape(-1)
            flat_dense.index_put_((pos,), flat_dense[pos].div_(W))

    def gather_sparse(self, payloads: dict[str, Payload], acc_dtypes) -> dict[str, torch.Tensor]:
        """The all-gather, started and finished at once, into new `[P, N]` tensors in
        `acc_dtypes[bucket id]` (public: benchmarks/bench_cluster.py times it to measure the
        decompress cost per received entry)."""
        in_flight = self.start(payloads, Collective.ALL_GATHER)
        averaged = {i: torch.empty(p.shape_PN, dtype=acc_dtypes[i], device=p.values_K.device)
                    for i, p in payloads.items()}
        self.finish_into(in_flight, averaged)
        return averaged

    # -- state --------------------------------------------------------------------------

    def _layout_for(self, grads: Mapping[str, torch.Tensor]) -> GradLayout:
        if self._layout is None or not self._layout.matches(grads):
            self._layout = GradLayout.from_grads(grads, self.config.scope)
        return self._layout

    def copy_member_(self, dst: int, src: int) -> None:
        """PBT exploit: member `dst` takes member `src`'s error-feedback residual (and
        PowerSGD's warm-start Q)."""
        self.error_feedback.copy_member_(dst, src)
        if self.powersgd is not None:
            self.powersgd.copy_member_(dst, src)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Error-feedback residuals and PowerSGD's warm-start Q (tensors;
        `torch.load(weights_only=True)` works)."""
        warm = self.powersgd.state_dict() if self.powersgd is not None else {}
        return {**self.error_feedback.state_dict(), **warm}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        warm = {k: v for k, v in state.items() if k.startswith(WARM_START_PREFIX)}
        self.error_feedback.load_state_dict({k: v for k, v in state.items() if k not in warm})
        if self.powersgd is not None:
            self.powersgd.load_state_dict(warm)

