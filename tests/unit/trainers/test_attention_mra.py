"""MRA-2: exact softmax when every block is refined (both modes, ragged T, key padding),
error that does not grow with the block budget, priors, padding that never leaks."""
import pytest
import torch
import torch.nn.functional as F

from trainers.attention.config import MraAttentionConfig
from trainers.attention.mra import MraAttention
from trainers.config import ModelConfig
from trainers.model import PopulationTransformer

K = 8
MODES = ["full", "sparse"]


def mra(**options) -> MraAttention:
    return MraAttention(MraAttentionConfig(**options), members=1, head_dim=K, causal=False)


def inputs(length: int, scale: float = 1.0):
    generator = torch.Generator().manual_seed(0)
    q, k = (scale * torch.randn(3, 2, length, K, generator=generator) for _ in range(2))
    return q, k, torch.randn(3, 2, length, K, generator=generator)


def padding_mask(length: int) -> torch.Tensor:
    key_mask_NT = torch.ones(3, length, dtype=torch.bool)
    key_mask_NT[1, length * 2 // 3:] = False  # padded at the end
    key_mask_NT[2, ::3] = False  # holes
    return key_mask_NT


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("padded", [False, True], ids=["dense", "key-padding"])
@pytest.mark.parametrize("length, block_size", [(37, 4), (32, 8), (5, 8)])
def test_every_block_refined_is_exact_softmax(length, block_size, mode, padded):
    q, k, v = inputs(length, scale=2.0)
    key_mask_NT = padding_mask(length) if padded else None
    expected = F.scaled_dot_product_attention(
        q, k, v, attn_mask=None if key_mask_NT is None else key_mask_NT[:, None, None, :])
    every_block = -(-length // block_size)
    out = mra(block_size=block_size, blocks_per_row=every_block, approx_mode=mode)(q, k, v, key_mask_NT)
    real_NT = torch.ones(3, length, dtype=torch.bool) if key_mask_NT is None else key_mask_NT
    assert torch.isfinite(out).all()  # padded query rows: unspecified but finite
    torch.testing.assert_close(out.transpose(1, 2)[real_NT], expected.transpose(1, 2)[real_NT],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_error_does_not_grow_with_blocks_per_row(mode):
    q, k, v = inputs(64)
    exact = F.scaled_dot_product_attention(q, k, v)
    errors = [float((mra(block_size=8, blocks_per_row=n, approx_mode=mode)(q, k, v) - exact).norm())
              for n in range(1, 9)]
    assert all(later <= earlier + 1e-6 for earlier, later in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-4 < errors[0], errors


def test_full_mode_approximates_better_than_dropping_blocks():
    q, k, v = inputs(64)
    exact = F.scaled_dot_product_attention(q, k, v)
    full, sparse = ((mra(block_size=8, blocks_per_row=2, approx_mode=mode)(q, k, v) - exact).norm()
                    for mode in MODES)
    assert full < sparse


def test_priors_pick_the_first_and_diagonal_blocks_first():
    kernel = mra(block_size=4, blocks_per_row=1, initial_prior_first_n_blocks=1, initial_prior_diagonal_n_blocks=3)
    low_NHUU = torch.randn(1, 1, 4, 4, generator=torch.Generator().manual_seed(3))
    picked_NHZ, in_budget_N1Z = kernel.select_blocks(low_NHUU, torch.ones(1, 1, 4, dtype=torch.bool))
    assert in_budget_N1Z.all()
    picked = set(picked_NHZ.flatten().tolist())
    # a budget of U = 4 blocks out of the 13 with a prior (first row/column, and |r - c| <= 1)
    first_or_band = {r * 4 + c for r in range(4) for c in range(4) if r == 0 or c == 0 or abs(r - c) <= 1}
    assert len(picked) == 4 and picked <= first_or_band


@pytest.mark.parametrize("mode", MODES)
def test_padded_keys_never_reach_real_positions_and_gradients_are_finite(mode):
    q, k, v = (x.requires_grad_() for x in inputs(21))
    key_mask_NT = torch.ones(3, 21, dtype=torch.bool)
    key_mask_NT[:, 15:] = False
    kernel = mra(block_size=4, blocks_per_row=2, approx_mode=mode)
    before = kernel(q, k, v, key_mask_NT)
    changed = [x.detach().clone() for x in (q, k, v)]
    for x in changed:
        x[:, :, 15:] += 5.0
    # Selection only looks at real tokens, so which blocks are exact does not change either.
    torch.testing.assert_close(kernel(*changed, key_mask_NT)[:, :, :15], before[:, :, :15], rtol=0, atol=1e-6)
    before.square().sum().backward()
    assert all(torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0 for x in (q, k, v))


def test_bfloat16_in_bfloat16_out_and_no_causal_form():
    q, k, v = inputs(21)
    assert mra(block_size=4, blocks_per_row=2)(q.bfloat16(), k.bfloat16(), v.bfloat16()).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="no causal form"):
        MraAttention(MraAttentionConfig(), members=1, head_dim=K, causal=True)


def test_in_the_population_model():
    config = ModelConfig(d_model=32, n_heads=2, n_layers=2,
                         attention={"kind": "mra", "block_size": 4, "blocks_per_row": 2})
    torch.manual_seed(0)
    model = PopulationTransformer(config, members=3, vocab_size=13, max_seq_len=32, causal=False,
                                  num_classes=5, pad_id=0)
    logits = model(torch.randint(1, 13, (3, 2, 21), generator=torch.Generator().manual_seed(1)))
    assert logits.shape == (3, 2, 5) and torch.isfinite(logits).all()
    logits.square().mean().backward()
    assert (model.blocks[0].attn.qkv.weight.grad.flatten(1).abs().sum(1) > 0).all()


def test_block_size_zero_is_refused():
    with pytest.raises(ValueError, match="block_size"):
        MraAttentionConfig(block_size=0)


@pytest.mark.parametrize("mode", MODES)
def test_appended_padding_changes_nothing_at_real_positions(mode):
    """The budget follows each sequence's real blocks, so the padded batch picks the same
    exact blocks as each sequence alone would."""
    kernel = mra(block_size=4, blocks_per_row=2, approx_mode=mode)
    q, k, v = inputs(40)
    lengths = [21, 14, 3]
    key_mask_NT = torch.arange(40) < torch.tensor(lengths).unsqueeze(1)
    padded = kernel(q, k, v, key_mask_NT)
    assert torch.isfinite(padded).all()
    for n, length in enumerate(lengths):
        alone = kernel(*(x[n:n + 1, :, :length] for x in (q, k, v)))
        torch.testing.assert_close(padded[n:n + 1, :, :length], alone, rtol=1e-5, atol=1e-5)
