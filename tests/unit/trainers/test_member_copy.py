"""Exploit copies one member's full state onto another, in place, and nothing else."""
import torch

from compression import CompressionConfig
from distrib.communicators import MpiCommunicator
from distrib.exchange import GradientExchange
from trainers.config import ModelConfig, TrainConfig
from trainers.loop import copy_member_state_, replica_digest
from trainers.model import PopulationTransformer, member_losses
from trainers.optim import build_optimizer

P = 4


def trained_group(seed=0, lrs=(1e-3, 2e-3, 3e-3, 4e-3)):
    """A group of len(lrs) members after three top-k steps (weights, moments, residuals set)."""
    members = len(lrs)
    torch.manual_seed(seed)
    model = PopulationTransformer(ModelConfig(d_model=16, n_layers=1, n_heads=2), members=members, vocab_size=32,
                                  max_seq_len=8, causal=True)
    optimizer = build_optimizer(model, TrainConfig(), members=members, lr_P=torch.tensor(lrs),
                                weight_decay_P=torch.zeros(members))
    exchange = GradientExchange(config=CompressionConfig(method="topk", density=0.1), communicator=MpiCommunicator())
    for step in range(3):
        ids = torch.randint(0, 32, (members, 2, 9))
        member_losses(model(ids[..., :-1]), ids[..., 1:]).sum().backward()
        exchange.exchange_({n: p.grad for n, p in model.named_parameters()}, step=step)
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer, exchange


def member_state(model, optimizer, exchange, m):
    weights = [p[m].clone() for p in model.parameters()]
    moments = [t[m].clone() for state in optimizer.state.values() for t in state.values()
               if torch.is_tensor(t) and t.dim() > 0]
    steps = [g["step_P"][m].clone() for g in optimizer.param_groups]
    residuals = [r[m].clone() for r in exchange.state_dict().values()]
    return weights + moments + steps + residuals


def test_copy_makes_target_state_equal_to_source_and_leaves_others():
    model, optimizer, exchange = trained_group()
    before = [member_state(model, optimizer, exchange, m) for m in range(P)]
    assert not all(torch.equal(a, b) for a, b in zip(before[1], before[3]))
    copy_member_state_(model, optimizer, exchange, target=1, source=3)
    after = [member_state(model, optimizer, exchange, m) for m in range(P)]
    assert len(after[1]) > 10 and all(torch.equal(a, b) for a, b in zip(after[1], before[3]))
    for m in (0, 2, 3):
        assert all(torch.equal(a, b) for a, b in zip(after[m], before[m]))
    digest = replica_digest(model)
    assert digest.shape == (P,) and digest[1] == digest[3] and digest[0] != digest[3]
    # Hyperparameters are not part of the copy: member 1 keeps its own learning rate.
    assert float(optimizer.param_groups[0]["lr_P"][1]) == float(torch.tensor(2e-3))
