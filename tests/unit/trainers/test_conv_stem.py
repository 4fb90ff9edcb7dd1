"""The convolutional stem (`model.image_stem: conv`): the population's grouped convolutions
equal each member's own torch.nn.Conv2d / max_pool2d, members stay independent, and its
weights carry the member axis through the optimizer, the exchange and a PBT exploit."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from compression import CompressionConfig
from distrib.communicators import MpiCommunicator
from distrib.exchange import GradientExchange
from trainers.config import ModelConfig, TrainConfig
from trainers.conv_stem import CHANNELS, ConvStem
from trainers.loop import copy_member_state_
from trainers.model import PopulationTransformer, member_losses
from trainers.optim import build_optimizer

P, B, GRID, D = 3, 2, (2, 3), 8  # an 8x12 image: a 2x3 grid of tokens


def images(members: int = P, batch: int = B, grid=GRID) -> torch.Tensor:
    pixels = grid[0] * 4 * grid[1] * 4
    return torch.randint(0, 256, (members, batch, pixels), generator=torch.Generator().manual_seed(1))


def conv_model(members: int = P, pool: str = "max") -> PopulationTransformer:
    torch.manual_seed(0)
    config = ModelConfig(d_model=D, n_layers=1, n_heads=2, image_stem="conv", pool=pool)
    return PopulationTransformer(config, members=members, vocab_size=256, max_seq_len=6, causal=False,
                                 num_classes=2, grid=GRID, patch_size=4)


def test_grouped_stem_equals_a_loop_of_torch_conv2d_per_member():
    torch.set_num_threads(1)
    torch.manual_seed(0)
    stem = ConvStem(P, grid=GRID, d_model=D)
    ids_PBN = images()
    out_PBTD = stem(ids_PBN)
    assert out_PBTD.shape == (P, B, 6, D)
    for m in range(P):  # member m with its own weights, as a plain CNN
        x = ids_PBN[m].view(B, 1, 8, 12).float() / 255
        for i, batched in enumerate(stem.convs):
            conv = nn.Conv2d(batched.weight.shape[2], batched.weight.shape[1], 3, padding=1)
            with torch.no_grad():
                conv.weight.copy_(batched.weight[m])
                conv.bias.copy_(batched.bias[m])
            x = F.relu(conv(x))
            if i in (1, 3):
                x = F.max_pool2d(x, 2)
        assert x.shape == (B, CHANNELS[-1], 2, 3)
        tokens = x.flatten(2).transpose(1, 2)  # [B, T, C], tokens row by row over the grid
        expected = tokens @ stem.proj.weight[m] + stem.proj.bias[m]
        torch.testing.assert_close(out_PBTD[m], expected, rtol=1e-5, atol=1e-5)


def test_members_are_independent_and_every_weight_has_the_member_axis():
    torch.set_num_threads(1)
    model = conv_model().eval()
    assert all(param.shape[0] == P for param in model.parameters())
    assert model.tok_emb.convs[0].weight.shape == (P, CHANNELS[0], 1, 3, 3)
    ids = images()
    before = model(ids)
    assert before.shape == (P, B, 2)
    with torch.no_grad():
        for param in model.tok_emb.parameters():
            param[1] += 0.1 * torch.randn_like(param[1])  # member 1's stem only
    after = model(ids)
    assert torch.equal(after[0], before[0]) and torch.equal(after[2], before[2])
    assert not torch.allclose(after[1], before[1])


def test_the_stem_needs_an_image_classifier_of_4x4_patches():
    config = ModelConfig(d_model=D, n_layers=1, n_heads=2, image_stem="conv")
    for shape in ({"grid": GRID, "patch_size": 2}, {"grid": None, "patch_size": 4}):
        with pytest.raises(ValueError, match="image_stem conv needs an image classifier with patch_size 4"):
            PopulationTransformer(config, members=1, vocab_size=256, max_seq_len=6, causal=False, num_classes=2,
                                  **shape)


def test_optimizer_exchange_and_exploit_carry_the_stem():
    torch.set_num_threads(1)
    model = conv_model(members=4)
    optimizer = build_optimizer(model, TrainConfig(), members=4, lr_P=torch.tensor([1e-3, 2e-3, 3e-3, 4e-3]),
                                weight_decay_P=torch.zeros(4))
    exchange = GradientExchange(config=CompressionConfig(method="topk", density=0.1), communicator=MpiCommunicator())
    start = model.tok_emb.convs[0].weight.detach().clone()
    labels = torch.tensor([[0, 1]] * 4)
    for step in range(2):
        member_losses(model(images(members=4)), labels).sum().backward()
        exchange.exchange_({n: p.grad for n, p in model.named_parameters()}, step=step)
        optimizer.step()
        optimizer.zero_grad()
    name = "tok_emb.convs.0.weight"
    weight = dict(model.named_parameters())[name]
    assert ((weight.detach() - start).flatten(1).abs().sum(1) > 0).all()  # every member's row moved
    residual = next(t for key, t in exchange.state_dict().items() if name in key)
    assert residual.shape[0] == 4 and (residual.abs().sum(1) > 0).all()  # top-k held some back per member
    copy_member_state_(model, optimizer, exchange, target=1, source=3)
    residual = next(t for key, t in exchange.state_dict().items() if name in key)
    assert torch.equal(weight[1], weight[3]) and not torch.equal(weight[0], weight[3])
    assert torch.equal(residual[1], residual[3])
    assert all(torch.equal(moment[1], moment[3]) for moment in optimizer.state[weight].values()
               if torch.is_tensor(moment) and moment.dim() > 0)
