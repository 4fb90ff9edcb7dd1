"""A PBT exploit moves the learned attention parameters of rpe_fft (relative-position
table) and collaborative (mixing matrix, shared projections) from one member to another,
both in-group (copy_member_state_) and across groups (export_shared / import_shared_)."""
import pytest
import torch

from compression import CompressionConfig
from distrib.communicators import MpiCommunicator
from distrib.exchange import GradientExchange
from trainers.config import ModelConfig, TrainConfig
from trainers.loop import copy_member_state_
from trainers.member_state import export_shared, import_shared_
from trainers.model import PopulationTransformer
from trainers.optim import build_optimizer

P = 3
OPTIONS = {"rpe_fft": {"max_offset": 4}, "collaborative": {"key_dim": 8, "mixing_init": "uniform"}}
LEARNED = {"rpe_fft": "attn.kernel.log_mask_PHR", "collaborative": "attn.mixing_PHQ"}


def group(kind: str):
    torch.manual_seed(0)
    config = ModelConfig(d_model=16, n_heads=2, n_layers=1, attention={"kind": kind, **OPTIONS[kind]})
    model = PopulationTransformer(config, members=P, vocab_size=11, max_seq_len=8, causal=True)
    with torch.no_grad():  # every member's parameters distinct (rpe_fft's table starts at zero)
        for param in model.parameters():
            param.add_(torch.randn_like(param))
    optimizer = build_optimizer(model, TrainConfig(), members=P, lr_P=torch.full((P,), 1e-3),
                                weight_decay_P=torch.zeros(P))
    exchange = GradientExchange(config=CompressionConfig(method="none"), communicator=MpiCommunicator())
    return model, optimizer, exchange


def learned(model, kind: str) -> torch.Tensor:
    return dict(model.blocks[0].named_parameters())[LEARNED[kind]]


@pytest.mark.parametrize("kind", list(OPTIONS))
def test_copy_member_state_moves_the_learned_attention_parameters(kind):
    model, optimizer, exchange = group(kind)
    before = learned(model, kind).detach().clone()
    assert before.shape[0] == P and not torch.equal(before[0], before[2])
    copy_member_state_(model, optimizer, exchange, target=0, source=2)
    after = learned(model, kind)
    assert torch.equal(after[0], before[2]) and torch.equal(after[1:], before[1:])


@pytest.mark.parametrize("kind", list(OPTIONS))
def test_cross_group_exploit_moves_the_learned_attention_parameters(kind):
    source, source_optimizer, _ = group(kind)
    target, target_optimizer, _ = group(kind)
    with torch.no_grad():
        learned(source, kind)[1].mul_(-2.0)
    import_shared_(target, target_optimizer, 0, export_shared(source, source_optimizer, 1))
    assert torch.equal(learned(target, kind)[0], learned(source, kind)[1])
