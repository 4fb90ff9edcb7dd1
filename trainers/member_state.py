"""One member's training state as plain tensors, to move it into another group's model
(population.groups > 1: a PBT exploit across groups; in-group exploits use
loop.copy_member_state_ instead, which needs no copy out).

Two parts, because they are alike in different places:
  shared    weights, optimizer moments and step counters, the fp16 loss scale: identical on
            every worker of a group (the exchange gives every worker the same averaged
            gradient; overflow flags are summed over workers)
  residual  the gradient exchange's state (error-feedback residuals): each worker its own

Hyperparameters are not here: the PBT controller decides them and hands them to the target.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # trainers/loss_scaler.py imports this module
    from distrib.exchange import GradientExchange
    from trainers.loss_scaler import MemberLossScaler


def export_shared(model: torch.nn.Module, optimizer, member: int, loss_scaler: MemberLossScaler | None = None) -> dict:
    shared = {"weights": {name: p[member].detach().clone() for name, p in model.named_parameters()},
              "optimizer": optimizer.member_state(member)}
    if loss_scaler is not None:
        shared["loss_scale"] = loss_scaler.member_state(member)
    return shared


@torch.no_grad()
def import_shared_(model: torch.nn.Module, optimizer, member: int, shared: dict,
                   loss_scaler: MemberLossScaler | None = None) -> None:
    params = dict(model.named_parameters())
    if set(params) != set(shared["weights"]):
        raise ValueError("the member's weights are for another model: parameter names differ")
    for name, row in shared["weights"].items():
        params[name][member].copy_(row)
    optimizer.load_member_state_(member, shared["optimizer"])
    if loss_scaler is not None:
        loss_scaler.load_member_state_(member, shared["loss_scale"])


def export_residual(exchange: GradientExchange, member: int) -> dict[str, torch.Tensor]:
    """Row `member` of every tensor in the exchange's state (each has a leading member axis).
    Through state_dict() so that whatever state the exchange keeps travels; it copies all
    members' residuals once, a cost paid only at a cross-group exploit."""
    return {key: tensor[member].clone() for key, tensor in exchange.state_dict().items()}


def import_residual_(exchange: GradientExchange, member: int, residual: dict[str, torch.Tensor]) -> None:
    state = exchange.state_dict()
    if set(state) != set(residual):
        # Both groups run the same schedule, so their exchanges hold the same tensors.
        raise ValueError(f"the member's exchange state has tensors {sorted(residual)}, this worker's has "
                         f"{sorted(state)}: the groups' exchanges are out of step")
    for key, row in residual.items():
        state[key][member].copy_(row)
    exchange.load_state_dict(state)
