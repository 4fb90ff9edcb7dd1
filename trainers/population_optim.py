"""Population optimizers: one fused update for all P members, each with its own
learning rate and weight decay.

Legend: P members; every parameter is `[P, ...]`; `x_P` is one value per member and
`x_Px` its view broadcast over a parameter (`[P, 1, 1, ...]`).

Hyperparameters are `[P]` float64 CPU tensors in each param group (`lr_P`,
`weight_decay_P`), with the Adam step counter `step_P`; torch's `state_dict()` keeps
group entries as they are, so they survive a checkpoint and `torch.load(weights_only=True)`.
The update reads copies on the parameters' device (`_DeviceCopies`), made again only when
a value changed (the schedule's learning rate, PBT) and without waiting for the stream;
the step counter counts there too.
`group["lr"]` is the population mean, kept only because DeepSpeed reads it for its logs;
setting it from outside raises at the next step (it would otherwise be ignored), so set
rates with `set_hyperparams`. DeepSpeed ZeRO stage 0 in fp32 uses this optimizer as is.

Parameters with dim <= 2 (per-member norms, biases: `[P, D]`) get no weight decay.
"""
import math

import torch

from compression import to_device


def _member_values(value, members: int, name: str) -> torch.Tensor:
    value_P = torch.as_tensor(value, dtype=torch.float64).flatten().cpu().clone()
    if value_P.numel() == 1:
        value_P = value_P.expand(members).clone()
    if value_P.shape != (members,):
        raise ValueError(f"{name} needs one value per member ({members}), got shape {tuple(value_P.shape)}")
    return value_P


class _PopulationOptimizer(torch.optim.Optimizer):
    def __init__(self, params, *, members: int, lr_P, weight_decay_P, **defaults):
        lr_P = _member_values(lr_P, members, "lr_P")
        super().__init__(params, dict(lr=float(lr_P.mean()), lr_P=lr_P,
                                      weight_decay_P=_member_values(weight_decay_P, members, "weight_decay_P"),
                                      step_P=torch.zeros(members, dtype=torch.float64), **defaults))
        self.members = members
        self._device_copies = _DeviceCopies()
        for group in self.param_groups:
            # Groups share the default tensors; give each its own so they never alias.
            for key in ("lr_P", "weight_decay_P", "step_P"):
                group[key] = group[key].clone()
            for p in group["params"]:
                if p.dim() == 0 or p.shape[0] != members:
                    raise ValueError(f"every parameter needs a leading member axis of {members}, "
                                     f"got shape {tuple(p.shape)}")

    def set_hyperparams(self, *, lr_P=None, weight_decay_P=None) -> None:
        """Replace the learning rate and/or weight decay of every member ([P] or a scalar)."""
        for group in self.param_groups:
            if lr_P is not None:
                group["lr_P"] = _member_values(lr_P, self.members, "lr_P")
                group["lr"] = float(group["lr_P"].mean())
            if weight_decay_P is not None:
                group["weight_decay_P"] = _member_values(weight_decay_P, self.members, "weight_decay_P")

    @torch.no_grad()
    def copy_member_(self, dst: int, src: int) -> None:
        """Member `dst` takes member `src`'s moments and step counter, in place (PBT exploit).
        Hyperparameters are not copied: the caller sets the explored ones."""
        for group in self.param_groups:
            group["step_P"][dst] = group["step_P"][src]
            for p in group["params"]:
                for value in self.state.get(p, {}).values():
                    value[dst].copy_(value[src])

    def member_state(self, member: int) -> dict:
        """Member `member`'s moments and step counters as new tensors, by position (param
        group, parameter), so that another optimizer of the same model can load them
        (a PBT exploit across groups)."""
        return {"step_P": [group["step_P"][member].clone() for group in self.param_groups],
                "state": [[{key: value[member].clone() for key, value in self.state.get(p, {}).items()}
                           for p in group["params"]] for group in self.param_groups]}

    @torch.no_grad()
    def load_member_state_(self, member: int, state: dict) -> None:
        """Member `member` takes a `member_state()` of another optimizer, in place."""
        for group, step, params_state in zip(self.param_groups, state["step_P"], state["state"], strict=True):
            group["step_P"][member] = step
            for p, values in zip(group["params"], params_state, strict=True):
                for key, value in values.items():
                    self.state[p][key][member].copy_(value)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else torch.enable_grad()(closure)()
        for index, group in enumerate(self.param_groups):
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._update(group, params, *self._group_tensors(index, group, params[0].device))
        return loss

    def _update(self, group, params, lr_P, wd_P, step_P) -> None:
        """One step of the rule for `params` (those with a gradient) of one group."""
        raise NotImplementedError

    def _group_tensors(self, index: int, group, device):
        """(lr_P, weight_decay_P, step_P) after this step's count, on `device`."""
        if group["lr"] != float(group["lr_P"].mean()):
            raise RuntimeError(f"param_groups[...]['lr'] was set to {group['lr']} from outside; this "
                               "optimizer has a rate per member: call set_hyperparams(lr_P=...) instead "
                               "(and configure no DeepSpeed lr scheduler)")
        group["step_P"] += 1
        return tuple(self._device_copies.get((index, key), group[key], device)
                     for key in ("lr_P", "weight_decay_P", "step_P"))


class _DeviceCopies:
    """Copies of host `[P]` tensors on the parameters' device, made again only when the host
    value changed, without waiting for the GPU (compression.to_device). A step counter one
    above the copy's is counted on the device."""

    def __init__(self):
        self._held: dict = {}  # key -> (the host value copied, its device copy)

    def get(self, key, host_P: torch.Tensor, device: torch.device) -> torch.Tensor:
        held = self._held.get(key)
        if held is not None and held[1].device == torch.device(device):
            seen_P, on_device_P = held
            if torch.equal(seen_P, host_P):
                return on_device_P
            if torch.equal(seen_P + 1, host_P):  # the step counter's count
                seen_P.copy_(host_P)
                return on_device_P.add_(1)
        # From a clone: on CPU too the copy is a tensor of its own, so counting on it leaves
        # the host's alone.
        on_device_P = to_device(host_P.clone(), device)
        self._held[key] = (host_P.clone(), on_device_P)
        return on_device_P


# torch's CPU sqrt is 4-6x slower on exact zeros than on other values (torch 2.13, AMD
# EPYC: 25 M zeros 86 ms, 25 M uniform values 14 ms), and after a sparse exchange ~99% of
# exp_avg_sq is zero (coordinates never sent): its sqrt took 157 ms of a 290 ms AdamW step.
# Adding the smallest normal fp32 first keeps every input non-zero. The change to denom is
# below 1e-17 (sqrt(2^-126) ~ 1e-19 over a bias correction sqrt(1 - beta2^t) >= 0.03 even
# for beta2 = 0.999), far under the rounding of eps = 1e-8.
SQRT_OFFSET = torch.finfo(torch.float32).tiny


def _broadcast(x_P: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    return x_P.to(p.dtype).view((-1,) + (1,) * (p.dim() - 1))


class PopulationAdamW(_PopulationOptimizer):
    """torch.optim.AdamW (decoupled weight decay, no amsgrad) for every member at once."""

    def __init__(self, params, *, members: int, lr_P, weight_decay_P=0.0,
                 betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8):
        super().__init__(params, members=members, lr_P=lr_P, weight_decay_P=weight_decay_P, betas=betas, eps=eps)

    def _update(self, group, params, lr_P, wd_P, step_P) -> None:
        beta1, beta2 = group["betas"]
        # Bias corrections per member, in float64: members may have taken different step counts.
        step_size_P = lr_P / (1 - beta1 ** step_P)
        bias2_sqrt_P = torch.sqrt(1 - beta2 ** step_P)
        for p in params:
            state = self.state[p]
            if not state:
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq"] = torch.zeros_like(p)
            exp_avg, exp_avg_sq, grad = state["exp_avg"], state["exp_avg_sq"], p.grad
            if p.dim() > 2:
                p.mul_(1 - _broadcast(lr_P * wd_P, p))
            exp_avg.lerp_(grad, 1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            # + SQRT_OFFSET: see its comment (denom unchanged within rounding; a faster sqrt).
            denom = exp_avg_sq.add(SQRT_OFFSET).sqrt_().div_(_broadcast(bias2_sqrt_P, p)).add_(group["eps"])
            p.addcdiv_(exp_avg * _broadcast(-step_size_P, p), denom)


class PopulationSGD(_PopulationOptimizer):
    """torch.optim.SGD with momentum (no dampening, no nesterov) for every member at once.

    Weight decay is torch SGD's: L2 added to the gradient before the momentum (so P = 1
    matches torch.optim.SGD exactly), not AdamW's decoupled decay.
    """

    def __init__(self, params, *, members: int, lr_P, weight_decay_P=0.0, momentum: float = 0.9):
        super().__init__(params, members=members, lr_P=lr_P, weight_decay_P=weight_decay_P, momentum=momentum)

    def _update(self, group, params, lr_P, wd_P, step_P) -> None:
        for p in params:
            d_p = p.grad
            if p.dim() > 2:
                d_p = d_p + _broadcast(wd_P, p) * p
            if group["momentum"]:
                # A zero buffer gives buf = d_p on the first step, as torch's clone does.
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                d_p = buf.mul_(group["momentum"]).add_(d_p)
            p.sub_(_broadcast(lr_P, p) * d_p)


@torch.no_grad()
def clip_grad_norm_per_member_(params, max_norm: float) -> torch.Tensor:
    """Clip each member's gradient to global norm `max_norm` on its own; returns norm_P.

    DeepSpeed's `gradient_clipping` takes one norm over all members, so one member's
    large gradient would shrink everyone's step; set it to 0 and call this instead.
    """
    grads = [p.grad for p in params if p.grad is not None]
    sq_P = torch.stack([g.float().pow(2).flatten(1).sum(1) for g in grads]).sum(0)
    norm_P = sq_P.sqrt()
    coef_P = (max_norm / (norm_P + 1e-6)).clamp(max=1.0)
    for g in grads:
        g.mul_(_broadcast(coef_P, g))
    return norm_P


def member_learning_rates(base_lr_P: torch.Tensor, warmup_fraction_P: torch.Tensor, *, step: int,
                          total_steps: int, schedule: str = "cosine", min_lr_ratio: float = 0.1) -> torch.Tensor:
    """The learning-rate schedule of every member at once ([P] in, [P] float64 out):
    linear warm-up over round(warmup_fraction * total_steps) steps, then constant or
    cosine decay to min_lr_ratio * lr. A member whose warm-up PBT lengthens past `step`
    goes back into warm-up."""
    base_lr_P = torch.as_tensor(base_lr_P, dtype=torch.float64)
    warmup_steps_P = torch.round(torch.as_tensor(warmup_fraction_P, dtype=torch.float64) * total_steps)
    warming_P = step < warmup_steps_P
    warm_lr_P = base_lr_P * (step + 1) / warmup_steps_P.clamp(min=1)
    if schedule == "constant":
        decayed_lr_P = base_lr_P
    else:
        progress_P = ((step - warmup_steps_P) / (total_steps - warmup_steps_P).clamp(min=1)).clamp(max=1.0)
        floor_P = min_lr_ratio * base_lr_P
        decayed_lr_P = floor_P + (base_lr_P - floor_P) * 0.5 * (1 + torch.cos(math.pi * progress_P))
    return torch.where(warming_P, warm_lr_P, decayed_lr_P)
