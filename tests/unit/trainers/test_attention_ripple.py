"""ripple: the summed-area-table form and the dense form each equal the explicit
ring-weighted T x T computation, reduce to `linear` when every weight is one, ignore padded
keys, keep members apart, refuse a T that is not H*W; `auto` picks dense up to 256 tokens;
the stick-breaking weights are a distribution over the rings and the far field."""
import pytest
import torch
import torch.nn.functional as F

from trainers.attention.config import (
    LinearAttentionConfig,
    RippleAttentionConfig,
    RpeFftAttentionConfig,
)
from trainers.attention.linear import LinearAttention
from trainers.attention.ripple import RippleAttention, dense_ripple_attention, ripple_attention
from trainers.attention.rpe_fft import RpeFftAttention

P, B, H, K = 2, 2, 3, 8
FORMS = ["tables", "dense"]  # the paper's summed-area tables, and the same weights as a T x T matrix


def explicit_ripple(q_NHTK, k_NHTK, v_NHTK, weights_NHTW, grid, key_mask_NT=None):
    """sum_j w_i(ring(i, j)) phi(q_i).phi(k_j) v_j / sum_j (same), with ring(i, j) the
    Chebyshev distance on the grid, capped at R (the far field). O(T^2), fp64."""
    Y, X = grid
    places = [(y, x) for y in range(Y) for x in range(X)]  # row by row
    ring_TT = torch.tensor([[max(abs(yi - yj), abs(xi - xj)) for yj, xj in places] for yi, xi in places])
    R = weights_NHTW.shape[-1] - 1
    index_NHTT = ring_TT.clamp(max=R).expand(*weights_NHTW.shape[:2], -1, -1)
    w_NHTT = torch.gather(weights_NHTW.double(), -1, index_NHTT)
    a_NHTT = (F.elu(q_NHTK.double()) + 1) @ (F.elu(k_NHTK.double()) + 1).transpose(-2, -1) * w_NHTT
    if key_mask_NT is not None:
        a_NHTT = a_NHTT * key_mask_NT[:, None, None, :]
    return (a_NHTT / a_NHTT.sum(-1, keepdim=True)) @ v_NHTK.double()


def random_inputs(length: int, *, seed: int = 0, dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(P * B, H, length, K, generator=generator, dtype=dtype) for _ in range(3)]


def random_kernel(grid, *, rings: int = 3, form: str = "tables", **options) -> RippleAttention:
    kernel = RippleAttention(RippleAttentionConfig(rings=rings, feature_chunk=3, form=form, **options), members=P,
                             head_dim=K, causal=False, grid=grid)
    with torch.no_grad():  # weights that differ by member, ring and query
        generator = torch.Generator().manual_seed(7)
        for param in kernel.parameters():
            param.copy_(torch.randn(param.shape, generator=generator))
    return kernel


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("grid,rings", [((5, 7), 3), ((6, 6), 9), ((1, 11), 4), ((7, 2), 1)])
def test_equals_explicit_ring_weighted_attention(grid, rings, form):
    kernel = random_kernel(grid, rings=rings, form=form)
    q, k, v = random_inputs(grid[0] * grid[1], seed=rings)
    weights = kernel.ring_weights(q)
    assert len({tuple(w) for w in weights.reshape(-1, rings + 1).tolist()}) > P  # weights vary by query
    torch.testing.assert_close(kernel(q, k, v), explicit_ripple(q, k, v, weights, grid), rtol=1e-5, atol=1e-5)


def test_query_independent_weights_equal_explicit():
    kernel = random_kernel((4, 6), rings=2, query_dependent=False)
    assert kernel.beta_query_PKR is None
    q, k, v = random_inputs(24)
    weights = kernel.ring_weights(q)
    assert torch.equal(weights[0, 0, 0], weights[B - 1, H - 1, 23])  # one member's weights, any query
    torch.testing.assert_close(kernel(q, k, v), explicit_ripple(q, k, v, weights, (4, 6)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", FORMS)
def test_query_independent_ripple_is_rpe_fft_with_a_ring_mask(form):
    """Two independent implementations (summed-area tables, 2-D FFT) of one computation: with
    weights that ignore the query, ripple is rpe_fft on the grid with f(dy, dx) = alpha of the
    ring max(|dy|, |dx|)."""
    grid, rings = (5, 6), 3
    ripple = random_kernel(grid, rings=rings, query_dependent=False, form=form)
    q, k, v = random_inputs(30)
    alpha_PW = ripple.ring_weights(q)[::B, 0, 0]  # member p's weights: row p*B
    rpe = RpeFftAttention(RpeFftAttentionConfig(), members=P, heads=H, head_dim=K, causal=False, grid=grid)
    Ry, Rx = rpe.offsets_yx
    ring_YX = torch.maximum(torch.arange(-Ry, Ry + 1)[:, None].abs(), torch.arange(-Rx, Rx + 1)[None, :].abs())
    with torch.no_grad():
        rpe.log_mask_PHYX.copy_(alpha_PW[:, ring_YX.clamp(max=rings)].log().unsqueeze(1))
    torch.testing.assert_close(ripple(q, k, v), rpe(q, k, v), rtol=1e-6, atol=1e-6)


def test_float32_inputs_and_tables_stay_close():
    grid = (8, 8)
    kernel = random_kernel(grid, rings=4, table_dtype="float32")
    q, k, v = random_inputs(64, dtype=torch.float32)
    out = kernel(q, k, v)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, explicit_ripple(q, k, v, kernel.ring_weights(q), grid).float(),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("attention", [ripple_attention, dense_ripple_attention])
def test_all_weights_one_is_linear_attention(attention):
    grid = (5, 6)
    q, k, v = random_inputs(30, dtype=torch.float32)
    ones = torch.ones(P * B, H, 30, 4)
    linear = LinearAttention(LinearAttentionConfig(), members=P, head_dim=K, causal=False)
    torch.testing.assert_close(attention(q, k, v, ones, grid=grid), linear(q, k, v), rtol=1e-5, atol=1e-5)


def test_stick_breaking_weights_are_a_distribution_and_start_uniform():
    kernel = RippleAttention(RippleAttentionConfig(rings=5), members=P, head_dim=K, causal=False, grid=(4, 4))
    q, _, _ = random_inputs(16)
    torch.testing.assert_close(kernel.ring_weights(q.float()), torch.full((P * B, H, 16, 6), 1 / 6))
    weights = random_kernel((4, 4), rings=5).ring_weights(q)
    assert (weights > 0).all()
    torch.testing.assert_close(weights.sum(-1), torch.ones(P * B, H, 16, dtype=torch.float64))


@pytest.mark.parametrize("form", FORMS)
def test_padded_keys_contribute_nothing(form):
    grid = (5, 5)
    kernel = random_kernel(grid, form=form)
    q, k, v = random_inputs(25)
    key_mask_NT = torch.rand(P * B, 25, generator=torch.Generator().manual_seed(3)) > 0.4  # holes anywhere
    key_mask_NT[:, 0] = True
    expected = explicit_ripple(q, k, v, kernel.ring_weights(q), grid, key_mask_NT)
    torch.testing.assert_close(kernel(q, k, v, key_mask_NT), expected, rtol=1e-5, atol=1e-5)
    scrambled_k = torch.where(key_mask_NT[:, None, :, None], k, 50.0 * torch.randn_like(k))
    scrambled_v = torch.where(key_mask_NT[:, None, :, None], v, 50.0 * torch.randn_like(v))
    torch.testing.assert_close(kernel(q, scrambled_k, scrambled_v, key_mask_NT), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("form", FORMS)
def test_members_use_their_own_weights(form):
    grid = (4, 5)
    kernel = random_kernel(grid, form=form)
    q, k, v = random_inputs(20)
    before = kernel(q, k, v)
    with torch.no_grad():
        kernel.beta_bias_P1R[1] += 1.0
        kernel.beta_query_PKR[1] += 1.0
    after = kernel(q, k, v)
    torch.testing.assert_close(after[:B], before[:B], rtol=0, atol=0)  # member 0's rows: untouched
    assert not torch.allclose(after[B:], before[B:])


@pytest.mark.parametrize("form", FORMS)
def test_gradients_match_the_explicit_computation(form):
    grid = (3, 4)
    kernel = random_kernel(grid, rings=2, form=form)
    q, k, v = (x.requires_grad_() for x in random_inputs(12))
    target = torch.randn(P * B, H, 12, K, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    (kernel(q, k, v) * target).sum().backward()
    got = [x.grad.clone() for x in (q, k, v, kernel.beta_bias_P1R, kernel.beta_query_PKR)]
    for x in (q, k, v, kernel.beta_bias_P1R, kernel.beta_query_PKR):
        x.grad = None
    (explicit_ripple(q, k, v, kernel.ring_weights(q), grid) * target).sum().backward()
    for grad, x in zip(got, (q, k, v, kernel.beta_bias_P1R, kernel.beta_query_PKR)):
        torch.testing.assert_close(grad, x.grad, rtol=1e-6, atol=1e-8)


def test_auto_takes_the_dense_form_up_to_256_tokens_and_the_tables_beyond():
    for grid, form in (((16, 16), "dense"), ((17, 16), "tables")):
        T = grid[0] * grid[1]
        q, k, v = (x[:P, :1] for x in random_inputs(T))  # one image per member, one head: small and quick
        torch.testing.assert_close(random_kernel(grid, form="auto")(q, k, v),
                                   random_kernel(grid, form=form)(q, k, v), rtol=0, atol=0)


@pytest.mark.parametrize("form", FORMS)
def test_tokens_not_on_the_grid_and_missing_grid_are_refused(form):
    kernel = random_kernel((4, 5), form=form)
    with pytest.raises(ValueError, match="21 tokens are not the grid's 4x5 = 20"):
        kernel(*random_inputs(21))
    with pytest.raises(ValueError, match="needs the task's grid"):
        RippleAttention(RippleAttentionConfig(), members=1, head_dim=K, causal=False, grid=None)
    with pytest.raises(ValueError, match="bidirectional"):
        RippleAttention(RippleAttentionConfig(), members=1, head_dim=K, causal=True, grid=(4, 5))
