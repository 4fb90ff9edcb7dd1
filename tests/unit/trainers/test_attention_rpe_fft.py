"""rpe_fft: the FFT form equals the explicit T x T masked linear attention, reduces to the
`linear` kind when f = 1, ignores padded keys, and has exact gradients (gradcheck). Every
head has its own table (drawn apart: `random_kernel`), so the oracles check that head h
reads table h."""
import pytest
import torch
import torch.nn.functional as F

from trainers.attention.config import LinearAttentionConfig, RpeFftAttentionConfig
from trainers.attention.linear import LinearAttention
from trainers.attention.rpe_fft import RpeFftAttention
from trainers.attention.frames import Frames, plan_frames
from trainers.attention.toeplitz import fft_length, masked_readout, near_frames

P, B, H, K = 2, 1, 3, 8
PASS_MB = 0.05  # passes of a few (row, feature) pairs: T = 64 takes 5 per pass, T = 1000 one


@pytest.fixture
def one_thread():
    """gradcheck runs thousands of tiny ops; on a busy 2-core machine each parallel region of
    two threads waits for the other core (one gradcheck here: 35 s on 2 threads, 6 s on 1)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def explicit_masked_attention(kernel: RpeFftAttention, q_NHTK, k_NHTK, v_NHTK, key_mask_NT=None):
    """(phi(Q) phi(K)^T * M) V, row-normalised, with M[i, j] = exp(table[clamp(i - j)]) read
    straight from the table (0 above the diagonal when causal, 0 at padded keys). fp64."""
    T, R = q_NHTK.shape[-2], kernel.max_offset
    offset_TT = torch.arange(T)[:, None] - torch.arange(T)[None, :]
    table_PHR = kernel.log_mask_PHR.detach().double()
    mask_PHTT = table_PHR[..., offset_TT.clamp(-R, R) + R].exp()
    if kernel.causal:
        mask_PHTT = mask_PHTT * (offset_TT >= 0)
    mask_NHTT = mask_PHTT.repeat_interleave(q_NHTK.shape[0] // mask_PHTT.shape[0], dim=0)
    a_NHTT = (F.elu(q_NHTK.double()) + 1) @ (F.elu(k_NHTK.double()) + 1).transpose(-2, -1) * mask_NHTT
    if key_mask_NT is not None:
        a_NHTT = a_NHTT * key_mask_NT[:, None, None, :]
    return (a_NHTT / a_NHTT.sum(-1, keepdim=True)) @ v_NHTK.double()


def random_inputs(length: int, *, N: int = P * B, heads: int = H, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(N, heads, length, K, generator=generator) for _ in range(3)]


def random_kernel(causal: bool, *, max_offset: int = 40, members: int = P, heads: int = H,
                  **options) -> RpeFftAttention:
    options = {"pass_buffer_mb": PASS_MB, **options}
    kernel = RpeFftAttention(RpeFftAttentionConfig(max_offset=max_offset, **options), members=members,
                             heads=heads, head_dim=K, causal=causal)
    with torch.no_grad():  # a mask that varies by member, head and offset, clamped past +-40
        kernel.log_mask_PHR.normal_(generator=torch.Generator().manual_seed(7))
    return kernel


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("length", [1, 7, 64, 1000])
def test_equals_explicit_masked_attention(causal, length):
    kernel = random_kernel(causal)
    q, k, v = random_inputs(length, seed=length)
    expected = explicit_masked_attention(kernel, q, k, v).float()
    torch.testing.assert_close(kernel(q, k, v), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_float32_fft_is_close_at_short_length(causal):
    kernel = random_kernel(causal, fft_dtype="float32")
    q, k, v = random_inputs(64)
    torch.testing.assert_close(kernel(q, k, v), explicit_masked_attention(kernel, q, k, v).float(),
                               rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_unit_mask_is_linear_attention(causal):
    kernel = RpeFftAttention(RpeFftAttentionConfig(max_offset=16), members=P, heads=H, head_dim=K, causal=causal)
    linear = LinearAttention(LinearAttentionConfig(chunk_size=8), members=P, head_dim=K, causal=causal)
    q, k, v = random_inputs(37)
    torch.testing.assert_close(kernel(q, k, v), linear(q, k, v), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_padded_keys_contribute_nothing(causal):
    kernel = random_kernel(causal)
    q, k, v = random_inputs(20)
    key_mask_NT = torch.ones(P * B, 20, dtype=torch.bool)
    key_mask_NT[0, 15:] = key_mask_NT[1, 12:] = False
    out = kernel(q, k, v, key_mask_NT=key_mask_NT)
    torch.testing.assert_close(out, explicit_masked_attention(kernel, q, k, v, key_mask_NT).float(),
                               rtol=1e-4, atol=1e-5)
    k2, v2 = k.clone(), v.clone()
    k2[0, :, 15:] += 5.0
    v2[1, :, 12:] -= 5.0
    torch.testing.assert_close(kernel(q, k2, v2, key_mask_NT=key_mask_NT), out, rtol=0, atol=1e-6)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_gradcheck_through_the_ffts(causal, one_thread):
    kernel = random_kernel(causal, max_offset=3, heads=2, pass_buffer_mb=1e-9).double()
    # K = 3, one (row, feature) pair per pass; two heads, two tables.
    q, k, v = (x[..., :3].double().requires_grad_() for x in random_inputs(5, N=P, heads=2))
    table = kernel.log_mask_PHR.detach().clone().requires_grad_()

    def attention(q, k, v, table):
        return torch.func.functional_call(kernel, {"log_mask_PHR": table}, (q, k, v))

    assert torch.autograd.gradcheck(attention, (q, k, v, table))



# --- the near field in frames, the far field by prefix sums -------------------------------

@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("max_offset,length", [(3, 50), (8, 200), (5, 123)])
def test_frames_and_far_field_equal_explicit_masked_attention(causal, max_offset, length):
    """Small tables make the near field run in several overlap-save frames with a far field
    (every offset >= max_offset) beside it: the path long sequences take with the default table."""
    frames = near_frames(length, max_offset, causal)
    assert frames.count >= 3 and length > max_offset
    kernel = random_kernel(causal, max_offset=max_offset)
    q, k, v = random_inputs(length, seed=length)
    key_mask_NT = torch.ones(P * B, length, dtype=torch.bool)
    key_mask_NT[1, length - 7:] = False
    torch.testing.assert_close(kernel(q, k, v, key_mask_NT=key_mask_NT),
                               explicit_masked_attention(kernel, q, k, v, key_mask_NT).float(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_gradcheck_through_frames_and_far_field(causal, one_thread):
    kernel = random_kernel(causal, max_offset=3, heads=2).double()
    assert near_frames(40, 3, causal).count >= 5  # frames of 5 points causal, 12 bidirectional
    q, k, v = (x[..., :2].double().requires_grad_() for x in random_inputs(40, N=P, heads=2))
    table = kernel.log_mask_PHR.detach().clone().requires_grad_()  # c+ and c- are its end entries

    def attention(q, k, v, table):
        return torch.func.functional_call(kernel, {"log_mask_PHR": table}, (q, k, v))

    assert torch.autograd.gradcheck(attention, (q, k, v, table))


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_far_field_equals_the_explicit_sum_over_chunks(causal, one_thread):
    """y_far_j(i) = sum_m phi_q_m(i) sum_t c(i - t) phi_k_m(t) v_j(t), c = c+ for i - t >= D,
    c- for t - i >= D (0 when causal), 0 between, in chunks of 4 (the last one short)."""
    R, M, J, T, D = 3, 2, 3, 23, 5
    generator = torch.Generator().manual_seed(2)
    q_RTM, k_RTM = (torch.rand(R, T, M, generator=generator, dtype=torch.float64) for _ in range(2))
    v_RTJ = torch.randn(R, T, J, generator=generator, dtype=torch.float64)
    c_R2 = torch.rand(R, 2, generator=generator, dtype=torch.float64) + 0.5
    offset_TT = torch.arange(T)[:, None] - torch.arange(T)[None, :]
    c_RTT = c_R2[:, :1, None] * (offset_TT >= D) + (0 if causal else c_R2[:, 1:, None] * (offset_TT <= -D))
    expected = torch.einsum("rim,rit,rtm,rtj->rji", q_RTM, c_RTT, k_RTM, v_RTJ)

    def far(q_RTM, k_RTM, v_RTJ, c_R2):  # the readout with a zero near field (g = 0 on one circle of 2T - 1)
        g_PHL = torch.zeros(q_RTM.shape[0], 1, fft_length(q_RTM.shape[1]), dtype=torch.float64)
        return masked_readout(g_PHL, q_RTM.mT, k_RTM.mT, v_RTJ.mT, pass_bytes=1, far_R2=c_R2, max_offset=D,
                              causal=causal, chunk_size=4)

    torch.testing.assert_close(far(q_RTM, k_RTM, v_RTJ, c_R2), expected)
    args = (q_RTM[:2, :13], k_RTM[:2, :13], v_RTJ[:2, :13], c_R2[:2])  # 8 shifted tokens: chunks of 4
    assert torch.autograd.gradcheck(far, tuple(x.clone().requires_grad_() for x in args))

def test_the_frames_plan():
    """A sequence no longer than the table keeps the one FFT of fft_length(T) points (no far
    field); with a small table the frame length stays bounded as T grows (time linear in T); the
    default table keeps one circle of T + 1023 points up to 8K tokens (plan_frames)."""
    for causal in (True, False):
        assert all((near_frames(t, d, causal).count, near_frames(t, d, causal).length) == (1, fft_length(t))
                   for t in range(1, 60) for d in (t, t + 5))
        plans = [near_frames(t, 8, causal) for t in (1000, 2000, 8000)]  # kernel width 8 or 15
        assert max(frames.length for frames in plans) <= 80 and plans[2].count >= 3 * plans[1].count
    assert [near_frames(t, 1024, True).length for t in (2048, 4096, 8192)] == [3072, 5120, 9216]
    one, several = plan_frames(10, -2, 2), plan_frames(50, -2, 2)
    assert (one.count, one.length, one.lead, one.step) == (1, 12, 0, 10)
    assert several.count > 1 and several.lead == 2 and several.step == several.length - 4
    offset, used = several.circle_offsets(torch.device("cpu"))
    assert offset[used].tolist() == [0, 1, 2, -2, -1]


@pytest.mark.parametrize("lo,hi,length,units", [(0, 3, 7, 5), (-4, 4, 20, 7), (-4, 4, 17, 10 ** 6)],
                         ids=["causal-shortest", "bidir", "bidir-shortest-one-pass"])
def test_masked_readout_in_frames_equals_the_explicit_sum(lo, hi, length, units, one_thread):
    """y_j(i) = sum_m phi_q_m(i) sum_t g(i - t) phi_k_m(t) v_j(t) with g zero outside lo .. hi,
    by overlap-save frames (and overlap-add in backward; the shortest frame, 2w - 1 points,
    has the longest overlap), cut into passes unevenly."""
    members, B, H, M, J, T = 2, 1, 2, 3, 4, 41
    frames = Frames(T, lo, hi, length)
    assert frames.count >= 3
    R = members * B * H
    generator = torch.Generator().manual_seed(11)
    offset, used = frames.circle_offsets(torch.device("cpu"))
    g_PHL = torch.randn(members, H, frames.length, generator=generator, dtype=torch.float64) * used
    phi_q_RMT, phi_k_RMT = (torch.rand(R, M, T, generator=generator, dtype=torch.float64) for _ in range(2))
    v_RJT = torch.randn(R, J, T, generator=generator, dtype=torch.float64)
    pair_R = torch.arange(R) // (B * H) * H + torch.arange(R) % H
    offset_TT = torch.arange(T)[:, None] - torch.arange(T)[None, :]
    inside_TT = (offset_TT >= lo) & (offset_TT <= hi)
    g_RTT = g_PHL.flatten(0, 1)[pair_R][:, offset_TT % frames.length] * inside_TT
    expected = torch.einsum("rmi,rit,rmt,rjt->rji", phi_q_RMT, g_RTT, phi_k_RMT, v_RJT)
    readout = lambda *x: masked_readout(*x, pass_bytes=units * frames.points * 8, frames=frames)  # noqa: E731
    torch.testing.assert_close(readout(g_PHL, phi_q_RMT, phi_k_RMT, v_RJT), expected)
    args = (g_PHL[:1, :1], phi_q_RMT[:2, :2], phi_k_RMT[:2, :2], v_RJT[:2, :3])  # one pair, 2 rows
    assert torch.autograd.gradcheck(readout, tuple(x.clone().requires_grad_() for x in args))

def is_5_smooth(n: int) -> bool:
    for prime in (2, 3, 5):
        while n % prime == 0:
            n //= prime
    return n == 1


def test_fft_length_is_the_smallest_5_smooth_length_holding_every_offset():
    assert [fft_length(t) for t in (1, 2, 3, 4, 5, 7, 11, 1000, 1024)] == [1, 3, 5, 8, 9, 15, 24, 2000, 2048]
    for t in range(1, 300):
        length = fft_length(t)
        assert is_5_smooth(length) and not any(is_5_smooth(n) for n in range(2 * t - 1, length))


@pytest.mark.parametrize("units", [1, 8, 40, 10 ** 6], ids=["one-sequence", "uneven-features", "uneven-rows", "one-pass"])
def test_masked_readout_equals_the_explicit_sum_however_it_is_cut_into_passes(units, one_thread):
    """y_j(i) = sum_m phi_q_m(i) sum_t g(i - t) phi_k_m(t) v_j(t), each (member, head) pair its
    own g, with passes of `units` (row, feature, column) sequences: 1 each; 4 columns x 2 of 3
    features; 3 of 8 rows x all; everything at once."""
    members, B, H, M, J, T = 2, 2, 2, 3, 4, 5
    R, L = members * B * H, fft_length(T)
    generator = torch.Generator().manual_seed(5)
    g_PHL = torch.randn(members, H, L, generator=generator, dtype=torch.float64)
    phi_q_RMT, phi_k_RMT = (torch.rand(R, M, T, generator=generator, dtype=torch.float64) for _ in range(2))
    v_RJT = torch.randn(R, J, T, generator=generator, dtype=torch.float64)
    pair_R = torch.arange(R) // (B * H) * H + torch.arange(R) % H  # rows are (n, h), n = p * B + b
    offset_TT = torch.arange(T)[:, None] - torch.arange(T)[None, :]
    g_RTT = g_PHL.flatten(0, 1)[pair_R][:, offset_TT % L]
    expected = torch.einsum("rmi,rit,rmt,rjt->rji", phi_q_RMT, g_RTT, phi_k_RMT, v_RJT)
    pass_bytes = units * L * 8
    torch.testing.assert_close(masked_readout(g_PHL, phi_q_RMT, phi_k_RMT, v_RJT, pass_bytes=pass_bytes), expected)
    if units == 40:  # gradcheck once, smaller: T = 2 (L = 3), 2 rows, features cut 2 + 1, J = 3
        args = (g_PHL[:1, :1, :3], phi_q_RMT[:2, :, :2], phi_k_RMT[:2, :, :2], v_RJT[:2, :3, :2])
        assert torch.autograd.gradcheck(lambda *x: masked_readout(*x, pass_bytes=6 * 3 * 8),
                                        tuple(x.clone().requires_grad_() for x in args))


# --- on a 2-D grid: block-Toeplitz mask f(d_row, d_col) by 2-D FFT ------------------------

def grid_kernel(grid, *, max_offset: int = 40, heads: int = H, **options) -> RpeFftAttention:
    kernel = RpeFftAttention(RpeFftAttentionConfig(max_offset=max_offset, pass_buffer_mb=PASS_MB, **options), members=P,
                             heads=heads, head_dim=K, causal=False, grid=grid)
    with torch.no_grad():
        kernel.log_mask_PHYX.normal_(generator=torch.Generator().manual_seed(7))
    return kernel


def explicit_grid_attention(kernel: RpeFftAttention, q_NHTK, k_NHTK, v_NHTK, key_mask_NT=None):
    """Linear attention masked by M[i, j] = exp(table[clamp(dy), clamp(dx)]), (dy, dx) the
    offset of token i from token j on the grid, read straight from the table. fp64."""
    (Y, X), (Ry, Rx) = kernel.grid, kernel.offsets_yx
    rows, cols = torch.arange(Y * X) // X, torch.arange(Y * X) % X
    dy_TT = (rows[:, None] - rows[None, :]).clamp(-Ry, Ry) + Ry
    dx_TT = (cols[:, None] - cols[None, :]).clamp(-Rx, Rx) + Rx
    mask_PHTT = kernel.log_mask_PHYX.detach().double()[:, :, dy_TT, dx_TT].exp()
    mask_NHTT = mask_PHTT.repeat_interleave(q_NHTK.shape[0] // P, dim=0)
    a_NHTT = (F.elu(q_NHTK.double()) + 1) @ (F.elu(k_NHTK.double()) + 1).transpose(-2, -1) * mask_NHTT
    if key_mask_NT is not None:
        a_NHTT = a_NHTT * key_mask_NT[:, None, None, :]
    return (a_NHTT / a_NHTT.sum(-1, keepdim=True)) @ v_NHTK.double()


@pytest.mark.parametrize("grid,max_offset", [((5, 7), 40), ((6, 6), 2), ((1, 9), 40), ((16, 16), 5)])
def test_grid_mask_equals_explicit_masked_attention(grid, max_offset):
    kernel = grid_kernel(grid, max_offset=max_offset)
    assert kernel.log_mask_PHYX.shape == (P, H, 2 * min(max_offset, grid[0] - 1) + 1,
                                          2 * min(max_offset, grid[1] - 1) + 1)
    q, k, v = random_inputs(grid[0] * grid[1], seed=grid[1])
    torch.testing.assert_close(kernel(q, k, v), explicit_grid_attention(kernel, q, k, v).float(),
                               rtol=1e-4, atol=1e-5)


def test_grid_mask_ignores_padded_keys():
    kernel = grid_kernel((4, 5))
    q, k, v = random_inputs(20)
    key_mask_NT = torch.rand(P * B, 20, generator=torch.Generator().manual_seed(3)) > 0.4
    key_mask_NT[:, 0] = True
    torch.testing.assert_close(kernel(q, k, v, key_mask_NT=key_mask_NT),
                               explicit_grid_attention(kernel, q, k, v, key_mask_NT).float(), rtol=1e-4, atol=1e-5)


def test_grid_mask_gradcheck_and_options(one_thread):
    kernel = grid_kernel((2, 3), max_offset=1, heads=2).double()  # a clamped offset (dx = +-2), a small gradcheck
    q, k, v = (x[..., :3].double().requires_grad_() for x in random_inputs(6, N=P, heads=2))
    table = kernel.log_mask_PHYX.detach().clone().requires_grad_()

    def attention(q, k, v, table):
        return torch.func.functional_call(kernel, {"log_mask_PHYX": table}, (q, k, v))

    assert torch.autograd.gradcheck(attention, (q, k, v, table))
    with pytest.raises(ValueError, match="7 tokens are not the grid's 2x3 = 6"):
        kernel(*(x.detach()[:, :, :1].expand(-1, -1, 7, -1) for x in (q, k, v)))
    one_d = RpeFftAttention(RpeFftAttentionConfig(grid_mask=False), members=P, heads=H, head_dim=K, causal=True,
                            grid=(3, 4))
    assert one_d.grid is None and one_d.log_mask_PHR.shape == (P, H, 2049)  # f(i - j) along the sequence
    with pytest.raises(ValueError, match="bidirectional"):
        RpeFftAttention(RpeFftAttentionConfig(), members=P, heads=H, head_dim=K, causal=True, grid=(3, 4))


# --- tables saved before they were per head ---------------------------------------------

@pytest.mark.parametrize("grid", [None, (4, 5)], ids=["1-D", "grid"])
def test_a_table_shared_by_the_heads_loads_into_every_head(grid):
    """A state dict from before per-head tables ([P, 1, ...]) loads: each head gets the shared
    table, so the loaded kernel computes what the shared table did (each head's oracle)."""
    kernel = grid_kernel(grid) if grid else random_kernel(causal=True)
    name = "log_mask_PHYX" if grid else "log_mask_PHR"
    shared = getattr(kernel, name).detach()[:, :1].clone()
    kernel.load_state_dict({name: shared})
    loaded = getattr(kernel, name)
    assert loaded.shape[1] == H and torch.equal(loaded, shared.expand_as(loaded))
    q, k, v = random_inputs(20)
    oracle = explicit_grid_attention if grid else explicit_masked_attention
    torch.testing.assert_close(kernel(q, k, v), oracle(kernel, q, k, v).float(), rtol=1e-4, atol=1e-5)
    with pytest.raises(RuntimeError, match="size mismatch"):  # any other shape is still refused
        kernel.load_state_dict({name: torch.cat([shared, shared], 1)})
