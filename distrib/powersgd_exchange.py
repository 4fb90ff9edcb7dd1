"""PowerSGD's wire pattern (compression.method: powersgd), called by GradientExchange.

The same algorithm as torch's DDP hook `ddp_comm_hooks.powerSGD_hook`, through our
exchange: the hook cannot sit under DeepSpeed (DeepSpeed does not wrap the model in DDP,
and our gradients are population-batched [P, ...] and exchanged at the accumulation
boundary), so its steps run here, per member, on the layerwise buckets of `GradLayout`.

Shape legend (as compression/powersgd.py):
  W  workers   P  members   n, m  one member's gradient as a matrix   r  approximation rank
  X  values per member in an all-reduce buffer (everything packed, in bucket order)

One step, on every worker:
  1. matrices (factorization() says which): acc = grad + residual; Q = orthogonalize(warm
     Q, or a Gaussian seeded by (seed, step, tensor) the first time); P = acc Q.
  2. all-reduce #1, ONE buffer [P, X]: the dense tensors (1-D, and matrices too small to
     be worth factorizing) and every P. Dense parts / W are their averages; each P is
     orthogonalized (the sum spans what the mean spans, so no / W).
  3. Q = acc^T P per matrix; all-reduce #2, ONE buffer [P, X] of every Q; then / W.
  4. approx = P Q^T: the averaged gradient; residual = acc - approx; Q is kept (warm start).
Two all-reduces are inherent: Q = M^T P needs the all-reduced, orthogonalized P. Torch's
hook makes three (the dense tensors get their own); packing them with the P factors saves
one latency.

Every worker ends with the same averages: P, Q and the dense sums come out of all-reduces,
and the orthogonalization runs on identical input. Residuals differ per worker (each keeps
its own gradient minus the common approximation, as the paper and torch do); dense tensors
keep no residual (their average is exact; torch's hook keeps local - average there, which
sums to zero over the workers and so changes no average). Warm-start Q is the all-reduced
Q, the same on every worker, but lives in each rank's checkpoint with the residuals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import torch

from compression import ByteReport, CompressionConfig, ErrorFeedback, GradLayout, derive_seed
from compression.powersgd import (Factorization, compress_left, compress_right, decompress, factorization,
                                  initial_right, orthogonalize)

from .communicators import Communicator, Pending

WARM_START_PREFIX = "powersgd_q."


@dataclass
class _Matrix:
    """One factorized bucket during a step."""

    id: str
    f: Factorization
    acc_PN: torch.Tensor  # gradient + residual, flat
    left_Pnr: torch.Tensor | None = None
    right_Pmr: torch.Tensor | None = None

    @property
    def acc_Pnm(self) -> torch.Tensor:
        return self.acc_PN.view(-1, self.f.n, self.f.m)


@dataclass
class Round:
    """Some buckets between their two all-reduces (all of them, or one bucket of
    distrib/overlap.py)."""

    matrices: list[_Matrix]
    dense: list[tuple[str, torch.Tensor]]  # (bucket id, grad [P, N]) sent as it is
    first_PX: torch.Tensor
    pending: Pending  # all-reduce #1, then #2
    dense_bytes: int  # per member: these buckets' fp32 gradient
    second_PX: torch.Tensor = field(default_factory=lambda: torch.empty(0))
    averaged: dict[str, torch.Tensor] = field(default_factory=dict)


class PowerSGDExchange:
    """PowerSGD for one run on one worker: the two all-reduces and the warm-start Q.

    Residuals live in the `ErrorFeedback` the caller passes (shared with the dense warm-up
    steps), so `GradientExchange` checkpoints and copies them as for every other method.
    """

    def __init__(self, *, config: CompressionConfig, communicator: Communicator,
                 error_feedback: ErrorFeedback, seed: int = 0) -> None:
        # GradientExchange makes one for method powersgd only, whose config has a rank.
        # compression.rank: PowerSGD's approximation rank (not a worker's rank)
        self.approx_rank, self.min_compression_rate = config.rank, config.min_compression_rate
        self.comm, self.error_feedback, self.seed = communicator, error_feedback, seed
        self._right: dict[str, torch.Tensor] = {}  # bucket id -> last step's averaged Q, [P, m, r]

    @torch.no_grad()
    def exchange(self, layout: GradLayout, grads: Mapping[str, torch.Tensor], *,
                 step: int) -> tuple[dict[str, torch.Tensor], ByteReport]:
        """Averaged `[P, N]` per bucket id, and what this worker sent per member."""
        buckets = [(b.id, b.entries[0].shape[1:], grad_PN)  # layerwise: one parameter per bucket
                   for b, (_, grad_PN) in zip(layout.buckets, layout.flatten(grads))]
        this = self.start(buckets, step=step)
        self.advance(this)
        return self.finish(this), self.report([this], members=layout.P)

    # The step in three parts, so that distrib/overlap.py can start the first all-reduce of
    # each bucket during backward: start (P = acc Q, all-reduce #1 started), advance (wait
    # for it, orthogonalize, Q = acc^T P, all-reduce #2 started), finish (wait, approximate).

    def start(self, buckets: list[tuple[str, tuple[int, ...], torch.Tensor]], *, step: int) -> Round:
        """`buckets`: (bucket id, one member's parameter shape, grad [P, N]). P factors of
        the matrices, dense tensors as they are, in ONE all-reduce, started."""
        matrices, dense = [], []
        for bucket_id, shape, grad_PN in buckets:
            f = factorization(shape, approx_rank=self.approx_rank, min_compression_rate=self.min_compression_rate)
            if f is None:
                dense.append((bucket_id, grad_PN.to(torch.promote_types(grad_PN.dtype, torch.float32))))
                continue
            x = _Matrix(bucket_id, f, self.error_feedback.compensate(bucket_id, grad_PN))
            right_Pmr = orthogonalize(self._warm_right(x, step=step))
            x.left_Pnr = compress_left(x.acc_Pnm, right_Pmr)
            matrices.append(x)
        first_PX = _pack([g for _, g in dense] + [x.left_Pnr for x in matrices])
        dense_bytes = sum(4 * grad_PN[0].numel() for _, _, grad_PN in buckets)
        return Round(matrices, dense, first_PX, self.comm.start_all_reduce_sum_(first_PX), dense_bytes)

    def advance(self, this: Round) -> None:
        """Wait for all-reduce #1; the Q factors, from the orthogonalized summed P, go out in
        all-reduce #2 (started)."""
        first_PX = this.pending.wait()
        dense_sums, lefts = _unpack(first_PX, [g for _, g in this.dense], [x.left_Pnr for x in this.matrices])
        W = self.comm.world_size
        this.averaged = {bucket_id: s.div_(W) for (bucket_id, _), s in zip(this.dense, dense_sums)}
        for x, left_Pnr in zip(this.matrices, lefts):
            x.left_Pnr = orthogonalize(left_Pnr)
            x.right_Pmr = compress_right(x.acc_Pnm, x.left_Pnr)
        this.second_PX = _pack([x.right_Pmr for x in this.matrices])
        this.pending = self.comm.start_all_reduce_sum_(this.second_PX)

    def finish(self, this: Round) -> dict[str, torch.Tensor]:
        """Wait for all-reduce #2: averaged `[P, N]` per bucket id; residuals and warm starts kept."""
        (rights,) = _unpack(this.pending.wait(), [x.right_Pmr for x in this.matrices])
        for x, right_Pmr in zip(this.matrices, rights):
            right_Pmr = right_Pmr.div_(self.comm.world_size)
            approx_PN = decompress(x.left_Pnr, right_Pmr).reshape(x.acc_PN.shape)
            self.error_feedback.update(x.id, x.acc_PN, approx_PN)
            self._right[x.id] = right_Pmr
            this.averaged[x.id] = approx_PN
        return this.averaged

    @staticmethod
    def report(rounds: list[Round], *, members: int) -> ByteReport:
        """Exact per-member bytes of every round's two all-reduce buffers, against the fp32
        dense gradient (every member sends alike)."""
        sent = sum(b.numel() * b.element_size() for r in rounds for b in (r.first_PX, r.second_PX))
        dense = sum(r.dense_bytes for r in rounds)
        return ByteReport((sent // max(members, 1),) * members, dense, dense_step=False)

    def _warm_right(self, x: _Matrix, *, step: int) -> torch.Tensor:
        """Last step's Q for this matrix, or a fresh one seeded alike on every worker."""
        shape = (x.acc_PN.shape[0], x.f.m, x.f.approx_rank)
        right_Pmr = self._right.get(x.id)
        if right_Pmr is not None and tuple(right_Pmr.shape) == shape:
            return right_Pmr.to(device=x.acc_PN.device, dtype=x.acc_PN.dtype)
        seed = derive_seed("powersgd", self.seed, step, x.id)
        return initial_right(shape, seed=seed, dtype=x.acc_PN.dtype, device=x.acc_PN.device)

    # -- PBT and checkpoints ------------------------------------------------------------

    @torch.no_grad()
    def copy_member_(self, dst: int, src: int) -> None:
        """Member `dst` takes member `src`'s warm-start Q (its residual is ErrorFeedback's)."""
        for right_Pmr in self._right.values():
            right_Pmr[dst].copy_(right_Pmr[src])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """`{"powersgd_q.<bucket id>": [P, m, r]}`."""
        return {WARM_START_PREFIX + i: q.detach().clone() for i, q in sorted(self._right.items())}

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        bad = [key for key in state if not key.startswith(WARM_START_PREFIX)]
        if bad:
            raise KeyError(f"unexpected keys in PowerSGD state (expected '{WARM_START_PREFIX}<id>'): {bad}")
        self._right = {key[len(WARM_START_PREFIX):]: q.detach().clone() for key, q in state.items()}


def _pack(tensors: list[torch.Tensor]) -> torch.Tensor:
    """`[P, X]`: each `[P, ...]` tensor flattened per member, concatenated in order."""
    if not tensors:
        return torch.empty(0)
    return torch.cat([t.reshape(t.shape[0], -1) for t in tensors], dim=1)


def _unpack(buffer_PX: torch.Tensor, *groups: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Inverse of `_pack` over the concatenation of `groups`: slices shaped like each tensor."""
    out, start = [], 0
    for like in groups:
        views = []
        for t in like:
            k = math.prod(t.shape[1:])
            views.append(buffer_PX[:, start:start + k].reshape(t.shape))
            start += k
        out.append(views)
    return out
