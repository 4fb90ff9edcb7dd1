"""A kernel's learned parameters carry the leading member axis P like every other weight,
so the population machinery handles them without knowing about them: the gradient of
each member's row comes from that member's loss only, the population optimizer updates
each row with its member's learning rate, the gradient exchange compresses them (each
member its own error-feedback row), and a PBT exploit copies them (in the group and
across groups). Shown with a toy kernel that holds a learned [P, K] query scale."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compression import CompressionConfig
from distrib.communicators import MpiCommunicator
from distrib.exchange import GradientExchange
from trainers.attention import KERNELS
from trainers.config import ModelConfig, TrainConfig
from trainers.loop import copy_member_state_
from trainers.member_state import export_shared, import_shared_
from trainers.model import PopulationTransformer, member_losses
from trainers.optim import build_optimizer

P, K = 4, 8
NAME = "blocks.0.attn.kernel.query_scale_PK"


class ScaledSoftmax(nn.Module):
    """Softmax attention with a learned per-member scale on each query dimension."""

    supports_causal = True

    def __init__(self, config, *, members: int, head_dim: int, causal: bool, layer: int = 0):
        super().__init__()
        self.members, self.causal = members, causal
        self.query_scale_PK = nn.Parameter(torch.ones(members, head_dim))

    def forward(self, q_NHTK, k_NHTK, v_NHTK, key_mask_NT=None):
        N, H, T, K = q_NHTK.shape
        # N is member-major: [P * B] unflattens to [P, B], and row p takes member p's scale.
        q_PBHTK = q_NHTK.reshape(self.members, N // self.members, H, T, K)
        q_NHTK = (q_PBHTK * self.query_scale_PK[:, None, None, None, :]).reshape(N, H, T, K)
        return F.scaled_dot_product_attention(q_NHTK, k_NHTK, v_NHTK, is_causal=self.causal)


@pytest.fixture(autouse=True)
def toy_kernel(monkeypatch):
    monkeypatch.setitem(KERNELS, "softmax", ScaledSoftmax)


def build_model(members: int = P) -> PopulationTransformer:
    torch.manual_seed(0)
    return PopulationTransformer(ModelConfig(d_model=2 * K, n_layers=1, n_heads=2), members=members,
                                 vocab_size=32, max_seq_len=8, causal=True)


def token_ids(members: int = P) -> torch.Tensor:
    return torch.randint(0, 32, (members, 2, 9), generator=torch.Generator().manual_seed(1))


def test_kernel_parameter_has_the_member_axis_and_one_member_gradient_per_row():
    model = build_model()
    param = dict(model.named_parameters())[NAME]
    assert param.shape == (P, K)
    ids = token_ids()
    member_losses(model(ids[..., :-1]), ids[..., 1:])[2].backward()  # member 2's loss only
    grad_rows = param.grad.abs().sum(1)
    assert grad_rows[2] > 0 and (grad_rows[[0, 1, 3]] == 0).all()


def trained_group(lrs=(1e-2, 2e-2, 3e-2, 4e-2)):
    model = build_model(len(lrs))
    optimizer = build_optimizer(model, TrainConfig(), members=len(lrs), lr_P=torch.tensor(lrs),
                                weight_decay_P=torch.zeros(len(lrs)))
    exchange = GradientExchange(config=CompressionConfig(method="topk", density=0.25),
                                communicator=MpiCommunicator())
    for step in range(3):
        ids = token_ids(len(lrs))
        member_losses(model(ids[..., :-1]), ids[..., 1:]).sum().backward()
        exchange.exchange_({n: p.grad for n, p in model.named_parameters()}, step=step)
        optimizer.step()
        optimizer.zero_grad()
    return model, optimizer, exchange


def test_optimizer_updates_and_exchange_compresses_each_members_row():
    model, optimizer, exchange = trained_group()
    param = dict(model.named_parameters())[NAME]
    moved_P = (param.detach() - 1).abs().sum(1)
    assert (moved_P > 0).all()
    assert len(set(moved_P.tolist())) == P  # each member its own learning rate
    residuals = [tensor for key, tensor in exchange.state_dict().items() if NAME in key]
    assert residuals and residuals[0].shape[0] == P
    assert (residuals[0].abs().sum(1) > 0).all()  # top-k left something behind for every member


def test_exploit_copies_the_kernel_parameter_with_its_moments_and_residual():
    model, optimizer, exchange = trained_group()
    param = dict(model.named_parameters())[NAME]
    residual = next(tensor for key, tensor in exchange.state_dict().items() if NAME in key)
    before = param.detach().clone(), residual.clone(), [t.clone() for t in optimizer.state[param].values()]
    copy_member_state_(model, optimizer, exchange, target=1, source=3)
    residual = next(tensor for key, tensor in exchange.state_dict().items() if NAME in key)
    assert torch.equal(param[1], before[0][3]) and torch.equal(param[0], before[0][0])
    assert torch.equal(residual[1], before[1][3])
    for moment, old in zip(optimizer.state[param].values(), before[2]):
        if moment.dim() > 0:
            assert torch.equal(moment[1], old[3])


def test_cross_group_exploit_carries_the_kernel_parameter():
    source, source_optimizer, _ = trained_group()
    target, target_optimizer, _ = trained_group(lrs=(5e-3,) * P)
    import_shared_(target, target_optimizer, 0, export_shared(source, source_optimizer, 2))
    torch.testing.assert_close(dict(target.named_parameters())[NAME][0],
                               dict(source.named_parameters())[NAME][2], rtol=0, atol=0)
