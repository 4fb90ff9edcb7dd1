"""Population optimizers against P separate torch optimizers on the member slices."""
import io
import math

import pytest
import torch

from trainers.population_optim import (PopulationAdamW, PopulationSGD, _DeviceCopies, clip_grad_norm_per_member_,
                                       member_learning_rates)

P = 3
LR_P = [1e-2, 3e-3, 5e-2]
WD_P = [0.0, 0.1, 0.3]


def make_params(seed=0):
    g = torch.Generator().manual_seed(seed)
    # A matrix (decayed), a vector per member (not decayed), a 3-D embedding-like tensor.
    return [torch.randn(P, 4, 5, generator=g), torch.randn(P, 5, generator=g), torch.randn(P, 2, 3, 2, generator=g)]


def grads_for(step, shapes):
    g = torch.Generator().manual_seed(100 + step)
    return [torch.randn(s, generator=g) for s in shapes]


def run_population(make_opt, steps, lr_P=LR_P, wd_P=WD_P):
    params = [p.clone().requires_grad_() for p in make_params()]
    opt = make_opt(params, members=P, lr_P=lr_P, weight_decay_P=wd_P)
    for step in range(steps):
        for p, g in zip(params, grads_for(step, [p.shape for p in params])):
            p.grad = g.clone()
        opt.step()
    return params, opt


def run_reference(make_ref, steps):
    """Member m alone: its slice of every parameter, its own torch optimizer."""
    finals = []
    for m in range(P):
        params = [p[m].clone().requires_grad_() for p in make_params()]
        # No decay where the population tensor has dim <= 2 (norms, biases).
        groups = [{"params": [params[0], params[2]], "weight_decay": WD_P[m]},
                  {"params": [params[1]], "weight_decay": 0.0}]
        opt = make_ref(groups, LR_P[m])
        for step in range(steps):
            for p, g in zip(params, grads_for(step, [(P,) + p.shape for p in params])):
                p.grad = g[m].clone()
            opt.step()
        finals.append([p.detach() for p in params])
    return finals


@pytest.mark.parametrize("make_opt, make_ref", [
    (lambda ps, **kw: PopulationAdamW(ps, betas=(0.9, 0.95), eps=1e-8, **kw),
     lambda groups, lr: torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)),
    (lambda ps, **kw: PopulationSGD(ps, momentum=0.9, **kw),
     lambda groups, lr: torch.optim.SGD(groups, lr=lr, momentum=0.9)),
], ids=["adamw", "sgd"])
def test_one_population_step_equals_separate_member_steps(make_opt, make_ref):
    params, _ = run_population(make_opt, steps=5)
    for m, ref in enumerate(run_reference(make_ref, steps=5)):
        for p, r in zip(params, ref):
            torch.testing.assert_close(p[m].detach(), r, atol=1e-6, rtol=1e-6)


def test_set_hyperparams_changes_member_rates_and_lr_summary():
    params, opt = run_population(PopulationAdamW, steps=1)
    opt.set_hyperparams(lr_P=[1.0, 2.0, 3.0], weight_decay_P=0.5)
    group = opt.param_groups[0]
    assert group["lr_P"].tolist() == [1.0, 2.0, 3.0] and group["weight_decay_P"].tolist() == [0.5] * 3
    assert group["lr"] == 2.0
    with pytest.raises(ValueError, match="one value per member"):
        opt.set_hyperparams(lr_P=[1.0, 2.0])


def test_setting_group_lr_from_outside_is_refused():
    params, opt = run_population(PopulationSGD, steps=1)
    opt.param_groups[0]["lr"] = 0.1
    with pytest.raises(RuntimeError, match="set_hyperparams"):
        opt.step()


def test_copy_member_copies_moments_and_step_counter():
    params, opt = run_population(PopulationAdamW, steps=3)
    opt.param_groups[0]["step_P"][1] = 7  # make the counters differ
    opt.copy_member_(dst=0, src=1)
    assert opt.param_groups[0]["step_P"].tolist() == [7, 7, 3]
    for p in params:
        for value in opt.state[p].values():
            assert torch.equal(value[0], value[1])
            assert not torch.equal(value[0], value[2])


def test_state_dict_round_trip_with_weights_only_load():
    params, opt = run_population(PopulationAdamW, steps=2)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    fresh = PopulationAdamW(params, members=P, lr_P=1.0, weight_decay_P=0.0)
    fresh.load_state_dict(state)
    group = fresh.param_groups[0]
    assert group["lr_P"].tolist() == LR_P and group["weight_decay_P"].tolist() == WD_P
    assert group["step_P"].tolist() == [2, 2, 2]
    for p in params:
        for key, value in opt.state[p].items():
            assert torch.equal(fresh.state[p][key], value)
    fresh.step()  # the restored lr summary passes the guard


class FreshCopiesAdamW(PopulationAdamW):
    """Copies its hyperparameters to the device anew every step (the behaviour before the
    copies were kept)."""

    def step(self, closure=None):
        self._device_copies = _DeviceCopies()
        return super().step(closure)


def test_kept_device_copies_follow_every_change_of_the_host_values_bit_for_bit():
    """Rates, counters and members changing between steps (the schedule, PBT's exploits, a
    restore) reach the update exactly as with fresh copies every step."""
    runs = []
    for make_opt in (PopulationAdamW, FreshCopiesAdamW):
        params = [p.clone().requires_grad_() for p in make_params()]
        opt = make_opt(params, members=P, lr_P=LR_P, weight_decay_P=WD_P)
        for step in range(7):
            if step == 2:
                opt.set_hyperparams(lr_P=[1e-3, 2e-2, 4e-3], weight_decay_P=[0.2, 0.0, 0.1])
            if step == 3:
                opt.copy_member_(dst=0, src=2)
            if step == 4:
                opt.param_groups[0]["step_P"][1] = 9
            if step == 5:
                opt.load_member_state_(1, opt.member_state(0))
            if step == 6:
                opt.load_state_dict(opt.state_dict())
            for param, grad in zip(params, grads_for(step, [q.shape for q in params])):
                param.grad = grad.clone()
            opt.step()
        runs.append(params)
    for kept, fresh in zip(*runs):
        assert torch.equal(kept, fresh)


def test_the_step_counter_counts_on_its_device_copy():
    copies = _DeviceCopies()
    step_P = torch.tensor([1.0, 1.0], dtype=torch.float64)
    first = copies.get("step_P", step_P, torch.device("cpu"))
    step_P += 1
    assert copies.get("step_P", step_P, torch.device("cpu")) is first  # no new copy
    assert first.tolist() == [2.0, 2.0] and first is not step_P  # the host's tensor is its own
    step_P[0] = 7
    again = copies.get("step_P", step_P, torch.device("cpu"))
    assert again is not first and again.tolist() == [7.0, 2.0]


def test_params_without_member_axis_are_rejected():
    with pytest.raises(ValueError, match="leading member axis of 3"):
        PopulationSGD([torch.zeros(2, 4, requires_grad=True)], members=3, lr_P=0.1)


def test_clip_grad_norm_per_member_matches_torch_per_member():
    params = [p.clone().requires_grad_() for p in make_params()]
    for p in params:
        p.grad = torch.randn_like(p) * 3
    expected = []
    for m in range(P):
        member = [p[m].detach().clone().requires_grad_() for p in params]
        for mp, p in zip(member, params):
            mp.grad = p.grad[m].clone()
        torch.nn.utils.clip_grad_norm_(member, max_norm=1.0)
        expected.append([mp.grad for mp in member])
    norm_P = clip_grad_norm_per_member_(params, max_norm=1.0)
    assert norm_P.shape == (P,) and bool((norm_P > 1).all())
    for m in range(P):
        for p, e in zip(params, expected[m]):
            torch.testing.assert_close(p.grad[m], e)


def scalar_learning_rate(step, *, lr, warmup_steps, total_steps, schedule, min_lr_ratio=0.1):
    """Reference: linear warm-up to lr, then constant or cosine decay to min_lr_ratio * lr."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    floor = min_lr_ratio * lr
    return floor + (lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize("schedule", ["cosine", "constant"])
def test_member_learning_rates_match_the_scalar_schedule(schedule):
    warmups, lrs = [0, 10, 30], [1e-3, 2e-3, 5e-4]
    for step in [0, 5, 9, 10, 29, 30, 60, 99, 150]:
        lr_P = member_learning_rates(torch.tensor(lrs), torch.tensor([w / 100 for w in warmups]), step=step,
                                     total_steps=100, schedule=schedule, min_lr_ratio=0.1)
        for m in range(3):
            expected = scalar_learning_rate(step, lr=lrs[m], warmup_steps=warmups[m], total_steps=100,
                                            schedule=schedule)
            assert math.isclose(lr_P[m], expected, rel_tol=1e-6)
