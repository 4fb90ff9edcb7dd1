"""A loss scale per member for fp16 training (`train.precision: fp16`).

torch.amp.GradScaler keeps one scale for the whole model, so one member's overflow would
skip every member's step and shrink everyone's scale. Here member p's loss is multiplied
by its own scale s_p; since members' weights are disjoint rows (every parameter has a
leading member axis P), the backward of sum_p s_p·loss_p gives member p's gradient times
s_p in row p. The rules are GradScaler's, per member (its defaults): an overflowing member
skips its optimizer step and halves its scale; after `growth_interval` clean steps in a
row a member's scale doubles.

Where it sits in a step (trainers/loop.py, `Worker.train_step`):

    backward(sum_p s_p·loss_p) -> unscale_ -> overflow flags summed over workers
        -> overflowing members' gradient rows zeroed -> exchange -> clip
        -> optimizer step, overflowing members' rows kept as they were -> update

Unscaling comes right after backward, BEFORE the exchange: the error-feedback residuals
must hold unscaled fp32 gradients (a residual kept at one step's scale would be wrong at
the next), and an inf or nan must never enter them (a residual keeps it forever; a
compressor that does not pick it would hide it from the averaged gradient). So the check
cannot wait for the averaged gradient: each worker checks its own gradient and the flags
are summed over workers (one [P] all-reduce), so every worker skips the same members and
the replicas stay identical. A skipped member's sent share of its residual is dropped with
the step, as a skipped GradScaler step drops its gradient.

The scales are per member and travel with the member: a PBT exploit copies the source's
scale and clean-step count with its weights (the scale fits those weights' gradients).
They are identical on every worker and checkpointed in every worker's file.
"""
from collections.abc import Iterable
from contextlib import contextmanager

import torch

from trainers.member_state import export_shared, import_shared_


class MemberLossScaler:
    def __init__(self, members: int, *, enabled: bool, device: torch.device | str = "cpu",
                 init_scale: float = 2.0 ** 16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000):
        self.enabled = enabled
        self.growth_factor, self.backoff_factor, self.growth_interval = growth_factor, backoff_factor, growth_interval
        self.scale_P = torch.full((members,), init_scale, dtype=torch.float32, device=device)
        self.clean_steps_P = torch.zeros(members, dtype=torch.int64, device=device)

    def scale(self, loss_P: torch.Tensor) -> torch.Tensor:
        """Each member's loss times its scale (unchanged when disabled)."""
        return loss_P * self.scale_P if self.enabled else loss_P

    @torch.no_grad()
    def unscale_(self, grads: Iterable[torch.Tensor]) -> torch.Tensor:
        """Divide each member's gradient rows by its scale, in place; returns the [P] bool
        flags of the members whose gradient holds an inf or nan on this worker."""
        inverse_P = self.scale_P.double().reciprocal().float()  # as GradScaler: one rounding of 1/s
        overflow_P = torch.zeros_like(self.scale_P, dtype=torch.bool)
        for grad in grads:
            grad.mul_(inverse_P.view((-1,) + (1,) * (grad.dim() - 1)))
            overflow_P |= ~torch.isfinite(grad).flatten(1).all(1)
        return overflow_P

    def update(self, overflow_P: torch.Tensor) -> None:
        """After the step: back off the overflowing members' scales, grow the others' after
        `growth_interval` clean steps in a row."""
        overflow_P = overflow_P.to(self.scale_P.device)
        self.clean_steps_P = torch.where(overflow_P, 0, self.clean_steps_P + 1)
        grow_P = self.clean_steps_P >= self.growth_interval
        factor_P = torch.where(overflow_P, self.backoff_factor, torch.where(grow_P, self.growth_factor, 1.0))
        self.scale_P = self.scale_P * factor_P.to(self.scale_P.dtype)
        self.clean_steps_P = torch.where(grow_P, 0, self.clean_steps_P)

    def copy_member_(self, dst: int, src: int) -> None:
        self.load_member_state_(dst, self.member_state(src))

    def member_state(self, member: int) -> dict[str, torch.Tensor]:
        """Member `member`'s scale and clean-step count (a PBT exploit across groups)."""
        return {"scale": self.scale_P[member].cpu().clone(), "clean_steps": self.clean_steps_P[member].cpu().clone()}

    @torch.no_grad()
    def load_member_state_(self, member: int, state: dict[str, torch.Tensor]) -> None:
        self.scale_P[member] = state["scale"]
        self.clean_steps_P[member] = state["clean_steps"]

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"scale_P": self.scale_P.cpu(), "clean_steps_P": self.clean_steps_P.cpu()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.scale_P = state["scale_P"].to(self.scale_P)
        self.clean_steps_P = state["clean_steps_P"].to(self.clean_steps_P)


@torch.no_grad()
def unscale_gradients_(scaler: MemberLossScaler, params: Iterable[torch.nn.Parameter], comm) -> torch.Tensor:
    """Every member's gradient divided by its loss scale, in place, before the exchange;
    returns the [P] bool flags of the members that overflowed on any worker (identical on
    every worker: summed over `comm`), whose gradient rows are zeroed so that no inf or
    nan reaches the exchange and its residuals. The flags stay where the gradients are
    (no host read here); `overflowing_members` reads them once for the step."""
    grads = [p.grad for p in params if p.grad is not None]
    overflow_P = comm.all_reduce_sum_(scaler.unscale_(grads).float()) > 0
    for grad in grads:
        grad.masked_fill_(overflow_P.view((-1,) + (1,) * (grad.dim() - 1)), 0.0)
    return overflow_P


def overflowing_members(overflow_P: torch.Tensor) -> list[int]:
    """The members to hold back this step: the step's one host read of the flags (as
    torch's GradScaler reads its found-inf flag once per step)."""
    return [member for member, overflow in enumerate(overflow_P.tolist()) if overflow]


@contextmanager
def members_unchanged(model: torch.nn.Module, optimizer, members: list[int]):
    """The optimizer step inside leaves `members` as they were: weights, moments and step
    counters, snapshot as a PBT copy takes them (trainers/member_state.py). Only those
    members' rows, and only when there are any (an overflow is rare): a clean step pays nothing."""
    saved = [export_shared(model, optimizer, member) for member in members]
    yield
    for member, shared in zip(members, saved):
        import_shared_(model, optimizer, member, shared)
