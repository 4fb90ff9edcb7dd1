"""MemberDropout knows on the host whether any member drops (no read of its [P] buffer in
forward): set by the population's rates and by a loaded state dict alike."""
import torch

from trainers.layers import MemberDropout


def outputs(dropout: MemberDropout) -> torch.Tensor:
    torch.manual_seed(0)
    return dropout(torch.ones(2, 1000))


def test_the_rates_the_population_sets_decide_whether_it_drops():
    dropout = MemberDropout(2, 0.0).train()
    assert not dropout.active and torch.equal(outputs(dropout), torch.ones(2, 1000))
    dropout.set_rate_(torch.tensor([0.0, 0.5], dtype=torch.float64))
    out = outputs(dropout)
    assert dropout.active and torch.equal(out[0], torch.ones(1000))
    assert 0.4 < (out[1] == 0).float().mean() < 0.6  # member 1 at its own rate
    dropout.set_rate_(torch.zeros(2))
    assert not dropout.active and torch.equal(outputs(dropout), torch.ones(2, 1000))


def test_a_loaded_state_dict_brings_its_rates_and_the_flag():
    trained = MemberDropout(2, 0.3)
    fresh = MemberDropout(2, 0.0).train()
    fresh.load_state_dict(trained.state_dict())
    assert fresh.active and (outputs(fresh) == 0).any()
    fresh.load_state_dict(MemberDropout(2, 0.0).state_dict())
    assert not fresh.active
