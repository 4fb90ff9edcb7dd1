"""fp16's loss scale per member (trainers/loss_scaler.py): one member's overflow skips
only that member's step and halves only its scale; the others step exactly as in fp32."""
import math

import torch

from compression import CompressionConfig
from distrib.communicators import MpiCommunicator
from distrib.exchange import GradientExchange
from trainers.config import ModelConfig, TrainConfig
from trainers.loss_scaler import MemberLossScaler, members_unchanged, unscale_gradients_
from trainers.member_state import export_shared, import_shared_
from trainers.model import PopulationTransformer, member_losses
from trainers.optim import build_optimizer

P = 3
COMM = MpiCommunicator()  # one process: the flags' sum is this process's


def group():
    """A fresh group of P members with a top-k exchange (error feedback on), same seed every call."""
    torch.manual_seed(0)
    model = PopulationTransformer(ModelConfig(d_model=16, n_layers=1, n_heads=2), members=P, vocab_size=32,
                                  max_seq_len=8, causal=True)
    optimizer = build_optimizer(model, TrainConfig(), members=P, lr_P=torch.full((P,), 1e-2),
                                weight_decay_P=torch.full((P,), 0.1))
    exchange = GradientExchange(config=CompressionConfig(method="topk", density=0.1), communicator=COMM)
    return model, optimizer, exchange


def batches(steps):
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(0, 32, (P, 2, 9), generator=generator) for _ in range(steps)]


def train(model, optimizer, exchange, ids_list, scaler=None, poison=None, first_step=0):
    """The loop's step order; `poison(model)` may put an inf into a gradient after backward."""
    for step, ids in enumerate(ids_list, start=first_step):
        loss_P = member_losses(model(ids[..., :-1]), ids[..., 1:])
        (scaler.scale(loss_P) if scaler else loss_P).sum().backward()
        if poison:
            poison(model)
        skipped, overflow_P = [], None
        if scaler:
            overflow_P = unscale_gradients_(scaler, model.parameters(), COMM)
            skipped = overflow_P.nonzero().flatten().tolist()
        exchange.exchange_({n: p.grad for n, p in model.named_parameters()}, step=step)
        with members_unchanged(model, optimizer, skipped):
            optimizer.step()
        if scaler:
            scaler.update(overflow_P)
        optimizer.zero_grad()


def member_rows(model, optimizer, m):
    return ([p[m].clone() for p in model.parameters()]
            + [t[m].clone() for state in optimizer.state.values() for t in state.values()]
            + [g["step_P"][m].clone() for g in optimizer.param_groups])


def test_one_members_overflow_skips_only_its_step():
    ids = batches(3)
    reference = group()
    train(*reference, ids)  # fp32, no scaling

    model, optimizer, exchange = group()
    train(model, optimizer, exchange, ids[:2], scaler=(scaler := MemberLossScaler(P, enabled=True)))
    before = member_rows(model, optimizer, 1)

    def poison(model):
        next(model.parameters()).grad[1, 0] = math.inf

    train(model, optimizer, exchange, ids[2:], scaler=scaler, poison=poison, first_step=2)
    # Members 0 and 2 took all three steps: scaling by a power of two and back is exact.
    for m in (0, 2):
        assert all(torch.equal(a, b) for a, b in zip(member_rows(model, optimizer, m),
                                                     member_rows(*reference[:2], m)))
    # Member 1's third step was skipped: weights, moments and step counter as after step two.
    assert all(torch.equal(a, b) for a, b in zip(member_rows(model, optimizer, 1), before))
    assert scaler.scale_P.tolist() == [2.0 ** 16, 2.0 ** 15, 2.0 ** 16]
    assert scaler.clean_steps_P.tolist() == [3, 0, 3]
    # The inf never reached the error-feedback residuals.
    assert all(torch.isfinite(r).all() for r in exchange.state_dict().values())


def test_a_huge_scale_overflows_that_member_alone():
    model, optimizer, exchange = group()
    scaler = MemberLossScaler(P, enabled=True)
    scaler.scale_P[2] = torch.finfo(torch.float32).max
    weights = [p[2].clone() for p in model.parameters()]
    train(model, optimizer, exchange, batches(1), scaler=scaler)
    assert all(torch.equal(p[2], w) for p, w in zip(model.parameters(), weights))
    assert scaler.scale_P[2] == torch.finfo(torch.float32).max / 2 and scaler.scale_P[0] == 2.0 ** 16


def test_scale_grows_after_clean_steps_and_travels_with_the_member():
    scaler = MemberLossScaler(P, enabled=True, growth_interval=2)
    scaler.update(torch.tensor([False, True, False]))
    scaler.update(torch.tensor([False, False, False]))
    assert scaler.scale_P.tolist() == [2.0 ** 17, 2.0 ** 15, 2.0 ** 17]
    assert scaler.clean_steps_P.tolist() == [0, 1, 0]
    scaler.copy_member_(0, 1)
    assert scaler.scale_P.tolist() == [2.0 ** 15, 2.0 ** 15, 2.0 ** 17] and scaler.clean_steps_P.tolist() == [1, 1, 0]
    restored = MemberLossScaler(P, enabled=True)
    restored.load_state_dict(scaler.state_dict())
    assert torch.equal(restored.scale_P, scaler.scale_P) and torch.equal(restored.clean_steps_P, scaler.clean_steps_P)


def test_disabled_scaler_leaves_the_loss_alone():
    loss_P = torch.tensor([1.0, 2.0, 3.0])
    assert torch.equal(MemberLossScaler(P, enabled=False).scale(loss_P), loss_P)


def test_scale_travels_with_a_member_to_another_group():
    donor, target = group(), group()
    donor_scaler, target_scaler = MemberLossScaler(P, enabled=True), MemberLossScaler(P, enabled=True)
    donor_scaler.update(torch.tensor([False, False, True]))
    import_shared_(target[0], target[1], 0, export_shared(donor[0], donor[1], 2, donor_scaler), target_scaler)
    assert target_scaler.scale_P.tolist() == [2.0 ** 15, 2.0 ** 16, 2.0 ** 16]
