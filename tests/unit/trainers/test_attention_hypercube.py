"""Hypercube attention: exactly SDPA under the explicit hypercube block mask (both modes,
ragged T, key padding); the reference's neighbourhood; whole-prefix reach in D layers."""
import math

import pytest
import torch
import torch.nn.functional as F

from trainers.attention.config import HypercubeAttentionConfig
from trainers.attention.hypercube import HypercubeAttention, neighbour_blocks
from trainers.config import ModelConfig
from trainers.model import PopulationTransformer

K = 8


def hypercube(block_size: int, causal: bool) -> HypercubeAttention:
    return HypercubeAttention(HypercubeAttentionConfig(block_size=block_size), members=1, head_dim=K, causal=causal)


def block_adjacency(num_blocks: int, causal: bool) -> torch.Tensor:
    """[U, U] bool: may query block i see key block j (the kernel's own table, as a matrix)."""
    index_US, valid_US = neighbour_blocks(num_blocks, causal=causal)
    adjacency = torch.zeros(num_blocks, num_blocks, dtype=torch.bool)
    adjacency[torch.arange(num_blocks).unsqueeze(1).expand_as(index_US)[valid_US], index_US[valid_US]] = True
    return adjacency


def gray_code_adjacency(num_blocks: int) -> torch.Tensor:
    """The reference's definition, written independently: blocks sit at the positions of a
    D-bit reflected Gray code and two are linked when their codes differ in one bit."""
    dims = math.ceil(math.log2(num_blocks)) if num_blocks > 1 else 0
    codes = [i ^ (i >> 1) for i in range(2 ** dims)]
    adjacency = torch.eye(num_blocks, dtype=torch.bool)
    for i in range(num_blocks):
        for j in range(num_blocks):
            adjacency[i, j] |= bin(codes[i] ^ codes[j]).count("1") == 1
    return adjacency


@pytest.mark.parametrize("num_blocks", [1, 2, 3, 5, 8, 13, 16, 37])
def test_neighbourhood_is_the_gray_code_hypercube(num_blocks):
    assert torch.equal(block_adjacency(num_blocks, causal=False), gray_code_adjacency(num_blocks))
    assert torch.equal(block_adjacency(num_blocks, causal=True), gray_code_adjacency(num_blocks).tril())


def reach_after(adjacency: torch.Tensor, layers: int) -> torch.Tensor:
    reach = torch.eye(len(adjacency))
    for _ in range(layers):
        reach = ((reach @ adjacency.float()) > 0).float()
    return reach.bool()


def test_every_block_reaches_all_it_may_see_within_log2_blocks_layers():
    for num_blocks in [*range(1, 40), 63, 64, 65, 100, 127, 128, 129, 200, 255, 256, 257, 300]:
        layers = math.ceil(math.log2(num_blocks)) if num_blocks > 1 else 0
        causal = reach_after(block_adjacency(num_blocks, causal=True), layers)
        assert torch.equal(causal, torch.ones(num_blocks, num_blocks, dtype=torch.bool).tril()), num_blocks
        assert reach_after(block_adjacency(num_blocks, causal=False), layers).all(), num_blocks


def explicit_mask(length: int, block_size: int, causal: bool) -> torch.Tensor:
    block_T = torch.arange(length) // block_size
    num_blocks = int(block_T[-1]) + 1
    allowed_TT = block_adjacency(num_blocks, causal)[block_T][:, block_T]
    return allowed_TT.tril() if causal else allowed_TT


def inputs(length: int):
    generator = torch.Generator().manual_seed(0)
    return [torch.randn(3, 2, length, K, generator=generator) for _ in range(3)]


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
@pytest.mark.parametrize("padded", [False, True], ids=["dense", "key-padding"])
@pytest.mark.parametrize("length, block_size", [(37, 4), (50, 8), (5, 8), (32, 4)])
def test_equals_sdpa_with_the_explicit_block_mask(length, block_size, causal, padded):
    q, k, v = inputs(length)
    key_mask_NT = torch.ones(3, length, dtype=torch.bool)
    if padded:  # sequence 0 full, 1 padded at the end, 2 with holes
        key_mask_NT[1, length * 2 // 3:] = False
        key_mask_NT[2, ::3] = False
    allowed_NTT = explicit_mask(length, block_size, causal) & key_mask_NT.unsqueeze(1)
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed_NTT.unsqueeze(1))
    out = hypercube(block_size, causal)(q, k, v, key_mask_NT if padded else None)
    rows_NT = allowed_NTT.any(-1)  # a row with no allowed key is NaN in SDPA and arbitrary here
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.transpose(1, 2)[rows_NT], expected.transpose(1, 2)[rows_NT],
                               rtol=1e-5, atol=1e-5)


def test_padded_keys_never_reach_real_positions_and_gradients_are_finite():
    q, k, v = (x.requires_grad_() for x in inputs(21))
    key_mask_NT = torch.ones(3, 21, dtype=torch.bool)
    key_mask_NT[:, 15:] = False
    kernel = hypercube(4, causal=False)
    before = kernel(q, k, v, key_mask_NT)
    changed = [x.detach().clone() for x in (q, k, v)]
    for x in changed:
        x[:, :, 15:] += 5.0
    torch.testing.assert_close(kernel(*changed, key_mask_NT)[:, :, :15], before[:, :, :15], rtol=0, atol=1e-6)
    before.square().sum().backward()
    assert all(torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0 for x in (q, k, v))


def test_bfloat16_in_bfloat16_out():
    q, k, v = inputs(21)
    assert hypercube(4, causal=True)(q.bfloat16(), k.bfloat16(), v.bfloat16()).dtype == torch.bfloat16


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_in_the_population_model(causal):
    config = ModelConfig(d_model=32, n_heads=2, n_layers=2, attention={"kind": "hypercube", "block_size": 4})
    torch.manual_seed(0)
    model = PopulationTransformer(config, members=3, vocab_size=13, max_seq_len=32, causal=causal,
                                  num_classes=None if causal else 5, pad_id=None if causal else 0)
    ids = torch.randint(1, 13, (3, 2, 21), generator=torch.Generator().manual_seed(1))
    logits = model(ids)
    assert logits.shape == ((3, 2, 21, 13) if causal else (3, 2, 5)) and torch.isfinite(logits).all()
    logits.square().mean().backward()
    assert (model.blocks[0].attn.qkv.weight.grad.flatten(1).abs().sum(1) > 0).all()
    if causal:  # no look-ahead through two layers
        changed = ids.clone()
        changed[:, :, 13] = (changed[:, :, 13] + 1) % 13
        torch.testing.assert_close(model(changed)[:, :, :13], logits[:, :, :13], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_appended_padding_changes_nothing_at_real_positions(causal):
    """More blocks only add neighbours beyond the real ones (bit d set means j >= 2^d)."""
    kernel = hypercube(4, causal)
    q, k, v = inputs(40)
    lengths = [21, 14, 3]
    key_mask_NT = torch.arange(40) < torch.tensor(lengths).unsqueeze(1)
    padded = kernel(q, k, v, key_mask_NT)
    assert torch.isfinite(padded).all()
    for n, length in enumerate(lengths):
        alone = kernel(*(x[n:n + 1, :, :length] for x in (q, k, v)))
        torch.testing.assert_close(padded[n:n + 1, :, :length], alone, rtol=1e-5, atol=1e-5)
