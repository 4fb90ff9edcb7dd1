"""contextpool against its oracles: the vectorised pooling equals a naive loop over every
(token, neighbour) pair, in 1-D and on a grid, padded or not (float64); as the support
size goes to 0 the block is the standard softmax block with the same weights. Also: the
grid changes the pool, a grid that does not hold T tokens is refused, members are
independent and each trains its own predictor."""
import math

import pytest
import torch

from trainers.attention import SUBLAYERS
from trainers.attention.contextpool import gaussian_pool
from trainers.config import ModelConfig
from trainers.model import PopulationTransformer, SelfAttention, TransformerBlock

D = 6


def naive_pool(x_NTD, weight_NT, sigma_NT, *, radius, grid, key_mask_NT):
    """y_i = sum_j w_j g_ij x_j / sum_j w_j g_ij, one (i, j) at a time: j in the disc of
    `radius` around i (its index, or its (row, column) on the grid), real or i itself."""
    N, T, _ = x_NTD.shape
    cols = grid[1] if grid else T
    y = torch.zeros_like(x_NTD)
    for n in range(N):
        for i in range(T):
            total, norm = 0.0, 0.0
            for j in range(T):
                (iy, ix), (jy, jx) = divmod(i, cols), divmod(j, cols)
                distance2 = (iy - jy) ** 2 + (ix - jx) ** 2
                if distance2 > radius ** 2 or not (j == i or key_mask_NT is None or key_mask_NT[n, j]):
                    continue
                share = weight_NT[n, j] * math.exp(-distance2 / (2 * float(sigma_NT[n, i]) ** 2))
                total, norm = total + share * x_NTD[n, j], norm + share
            y[n, i] = total / norm
    return y


def pool_inputs(T: int, *, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(3, T, D, generator=generator, dtype=torch.float64)
    weight = torch.rand(3, T, generator=generator, dtype=torch.float64) + 0.05
    sigma = 2.0 * torch.rand(3, T, generator=generator, dtype=torch.float64) + 0.1
    return x, weight, sigma


@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.parametrize("grid, radius", [(None, 3), (None, 20), ((4, 5), 2), ((4, 5), 6), ((1, 7), 2)],
                         ids=["1d", "1d-wide", "grid", "grid-wide", "grid-one-row"])
def test_vectorised_pooling_equals_the_naive_loop(grid, radius, padded):
    T = grid[0] * grid[1] if grid else 13
    x, weight, sigma = pool_inputs(T)
    key_mask = (torch.rand(3, T, generator=torch.Generator().manual_seed(9)) > 0.3) if padded else None
    expected = naive_pool(x, weight, sigma, radius=radius, grid=grid, key_mask_NT=key_mask)
    got = gaussian_pool(x, weight, sigma, radius=radius, grid=grid, key_mask_NT=key_mask)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_the_grid_changes_the_pool_and_must_hold_the_sequence():
    x, weight, sigma = pool_inputs(20)
    flat = gaussian_pool(x, weight, sigma, radius=3, grid=None)
    on_grid = gaussian_pool(x, weight, sigma, radius=3, grid=(4, 5))
    assert not torch.allclose(flat, on_grid)  # vertical neighbours are 5 apart in 1-D, 1 on the grid
    with pytest.raises(ValueError, match="grid 4x4 holds 16 tokens, the sequence 20"):
        gaussian_pool(x, weight, sigma, radius=3, grid=(4, 4))


def config(kind: str, **options) -> ModelConfig:
    return ModelConfig(d_model=16, n_heads=2, n_layers=2, dropout=0.0, attention={"kind": kind, **options})


def blocks_with_shared_weights(max_support: float, *, P: int = 2):
    """A standard softmax block and a contextpool block holding the same weights (the
    contextpool block's own: only its pooling predictor)."""
    torch.manual_seed(0)
    standard = TransformerBlock(config("softmax"), members=P, causal=False, layer=0)
    pooled = TransformerBlock(config("contextpool", max_support=max_support), members=P, causal=False, layer=0)
    with torch.no_grad():  # weights far from their near-zero init, so that every part matters
        for param in [*standard.parameters(), *pooled.attn.parameters()]:
            param.normal_(0.0, 0.5)
    missing, unexpected = pooled.load_state_dict(standard.state_dict(), strict=False)
    assert not unexpected and all(key.startswith("attn.predictor_") for key in missing)
    return standard, pooled


@pytest.mark.parametrize("padded", [False, True])
def test_as_the_support_goes_to_zero_the_block_becomes_the_standard_softmax_block(padded):
    x_PBTD = torch.randn(2, 3, 17, 16, generator=torch.Generator().manual_seed(1))
    mask_PBT = (torch.arange(17) < torch.tensor([17, 9, 4])[:, None]).expand(2, -1, -1) if padded else None
    real = mask_PBT.unsqueeze(-1) if padded else torch.ones(1, dtype=torch.bool)
    pooling_gaps, block_gaps = [], []
    with torch.no_grad():
        for max_support in (4.0, 1.0, 0.3, 0.01):
            standard, pooled = blocks_with_shared_weights(max_support)
            normed = standard.norm_attn(x_PBTD)
            pooling_gaps.append(float(((pooled.attn.pooled(normed, mask_PBT) - normed) * real).norm()
                                      / (normed * real).norm()))
            block_gap = (pooled(x_PBTD, mask_PBT) - standard(x_PBTD, mask_PBT)) * real  # real tokens only
            block_gaps.append(float(block_gap.abs().max()))
    # The pooled features approach the token's own as the support shrinks, and so does the block.
    assert pooling_gaps == sorted(pooling_gaps, reverse=True) and pooling_gaps[0] > 0.5
    assert block_gaps[0] > 0.1
    # sigma <= 0.01: a neighbour's weight exp(-5000) is exactly 0, the pool is the token itself.
    assert pooling_gaps[-1] == 0.0 and block_gaps[-1] == 0.0


def test_zero_support_on_a_grid_is_the_standard_attention_sublayer():
    torch.manual_seed(0)
    standard = SelfAttention(config("softmax"), members=2, causal=False, layer=0)
    pooled = SUBLAYERS["contextpool"](config("contextpool", max_support=0.01), members=2, causal=False, grid=(3, 4))
    pooled.load_state_dict(standard.state_dict(), strict=False)
    x_PBTD = torch.randn(2, 2, 12, 16, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(pooled(x_PBTD), standard(x_PBTD), rtol=0, atol=0)
    wide = SUBLAYERS["contextpool"](config("contextpool", max_support=2.0), members=2, causal=False, grid=(3, 4))
    wide.load_state_dict(pooled.state_dict())
    assert not torch.allclose(wide(x_PBTD), standard(x_PBTD))


def test_population_transformer_trains_every_members_predictor():
    torch.manual_seed(0)
    model = PopulationTransformer(config("contextpool"), members=2, vocab_size=11, max_seq_len=24, causal=False,
                                  num_classes=3, pad_id=0)
    ids = torch.randint(1, 11, (2, 3, 24), generator=torch.Generator().manual_seed(1))
    ids[:, 1, 15:] = 0  # padding
    logits = model(ids)
    assert logits.shape == (2, 3, 3) and torch.isfinite(logits).all()
    logits.square().sum().backward()
    for block in model.blocks:
        for name, param in block.attn.named_parameters():
            assert param.shape[0] == 2 and (param.grad.reshape(2, -1).abs().sum(1) > 0).all(), name


def test_causal_is_refused():
    with pytest.raises(ValueError, match="no causal form"):
        SUBLAYERS["contextpool"](config("contextpool"), members=1, causal=True)
