"""PowerSGD: the pure functions (compression/powersgd.py), the spec's rules, and the
exchange's state on one worker (distrib/powersgd_exchange.py through GradientExchange,
over a one-rank MPI world)."""
import pytest
import torch

from compression import CompressionConfig
from compression.powersgd import (Factorization, compress_left, compress_right, decompress, factorization,
                                  initial_right, orthogonalize)
from distrib.communicators import MpiCommunicator
from distrib.exchange import GradientExchange
from launch.spec.problems import SpecError
from launch.spec.schema import validate_tree


def one_round(matrix_Pnm: torch.Tensor, right_Pmr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One worker's PowerSGD step (W = 1: the all-reduces are the identity): approx, new Q."""
    left_Pnr = orthogonalize(compress_left(matrix_Pnm, orthogonalize(right_Pmr)))
    right_Pmr = compress_right(matrix_Pnm, left_Pnr)
    return decompress(left_Pnr, right_Pmr), right_Pmr


def low_rank(P: int, n: int, m: int, r: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(P, n, r, generator=gen, dtype=torch.float64) @ torch.randn(
        P, r, m, generator=gen, dtype=torch.float64)


def test_a_rank_r_matrix_is_recovered_exactly():
    matrix = low_rank(3, 20, 12, 2)
    right = initial_right((3, 12, 2), seed=1, dtype=torch.float64)
    approx, _ = one_round(matrix, right)
    torch.testing.assert_close(approx, matrix, rtol=0, atol=1e-10)
    # ...and not by a lower rank: the round projects on a rank-1 subspace.
    approx1, _ = one_round(matrix, right[..., :1])
    assert (approx1 - matrix).norm() > 1e-3 * matrix.norm()


def test_orthogonalize_gives_orthonormal_columns_even_for_a_zero_matrix():
    factors = torch.randn(4, 10, 3, dtype=torch.float64)
    factors[2] = 0.0  # a member whose gradient matrix is zero: Gram-Schmidt would divide by 0
    q = orthogonalize(factors)
    eye = torch.eye(3, dtype=torch.float64).expand(4, 3, 3)
    torch.testing.assert_close(q.transpose(1, 2) @ q, eye)
    # the same column span as the input (for the full-rank members)
    torch.testing.assert_close(q[0] @ q[0].T @ factors[0], factors[0])


def test_batched_over_members_matches_each_member_alone():
    gen = torch.Generator().manual_seed(3)
    matrix = torch.randn(4, 16, 9, generator=gen, dtype=torch.float64)
    right = initial_right((4, 9, 2), seed=5, dtype=torch.float64)
    approx, new_right = one_round(matrix, right)
    for p in range(4):
        alone, alone_right = one_round(matrix[p:p + 1], right[p:p + 1])
        torch.testing.assert_close(approx[p:p + 1], alone, rtol=0, atol=1e-12)
        torch.testing.assert_close(new_right[p:p + 1], alone_right, rtol=0, atol=1e-12)


def test_initial_right_is_seeded_and_private():
    torch.manual_seed(0)
    before = torch.rand(1)
    a = initial_right((2, 5, 3), seed=11, dtype=torch.float32)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(1), before)  # the global RNG was not touched
    assert torch.equal(a, initial_right((2, 5, 3), seed=11, dtype=torch.float32))
    assert not torch.equal(a, initial_right((2, 5, 3), seed=12, dtype=torch.float32))


def test_which_shapes_are_factorized():
    # torch's rule: factorize when (n + m) r * min_compression_rate < n m.
    assert factorization((32, 64), approx_rank=2, min_compression_rate=2) == Factorization(32, 64, 2)
    assert factorization((32, 4, 16), approx_rank=4, min_compression_rate=2) == Factorization(32, 64, 4)
    assert factorization((64,), approx_rank=1, min_compression_rate=2) is None  # 1-D: dense
    assert factorization((4, 4), approx_rank=2, min_compression_rate=2) is None  # 8*2*2 = 32 >= 16
    assert factorization((4, 4), approx_rank=9, min_compression_rate=0.1) == Factorization(4, 4, 4)  # r <= min(n, m)


# ---------------------------------------------------------------- the spec


def test_rank_belongs_to_powersgd_only():
    assert CompressionConfig(method="powersgd", rank=4).rank == 4
    assert CompressionConfig(method="topk").rank is None
    cases = {
        "compression.rank": [{"method": "powersgd"}, {"method": "topk", "rank": 2}, {"method": "powersgd", "rank": 0}],
        "compression.min_compression_rate": [{"method": "powersgd", "rank": 1, "min_compression_rate": 0}],
        "compression.scope": [{"method": "powersgd", "rank": 1, "scope": "global"}],
        "compression.value_dtype": [{"method": "powersgd", "rank": 1, "value_dtype": "fp16"}],
    }
    for path, sections in cases.items():
        for section in sections:
            with pytest.raises(SpecError) as err:
                validate_tree({"compression": section})
            assert [p.path for p in err.value.problems] == [path], section
    with pytest.raises(SpecError, match="needs a rank: set compression.rank"):
        validate_tree({"compression": {"method": "powersgd"}})
    with pytest.raises(SpecError, match="rank is PowerSGD's; method 'topk' uses density"):
        validate_tree({"compression": {"method": "topk", "rank": 2}})


# ---------------------------------------------------------------- the exchange, one worker


P, SHAPES = 2, {"w": (2, 16, 12), "b": (2, 12)}


def grads_at(step: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(step)
    return {name: torch.randn(shape, generator=gen) for name, shape in SHAPES.items()}


def make_exchange(**kwargs) -> GradientExchange:
    config = CompressionConfig(method="powersgd", rank=2, **kwargs)
    return GradientExchange(config=config, communicator=MpiCommunicator(), seed=3)


def test_one_worker_residual_is_what_the_approximation_left_out():
    exchange = make_exchange()
    residual = torch.zeros(P, 16 * 12)
    for step in range(3):
        grads = grads_at(step)
        result = exchange.exchange(grads, step=step)
        acc = grads["w"].reshape(P, -1) + residual
        residual = exchange.error_feedback.residual("w")
        torch.testing.assert_close(residual, acc - result.grads["w"].reshape(P, -1))
        assert torch.equal(result.grads["b"], grads["b"])  # 1-D: dense, exact, no residual
        assert exchange.error_feedback.residual("b") is None
        # per member: (16 + 12) * 2 factor values + 12 bias values, fp32
        assert result.bytes.bytes_sent_P == (4 * (56 + 12),) * P
        assert result.bytes.dense_bytes == 4 * (192 + 12) and not result.bytes.dense_step


def test_warm_start_and_residual_are_checkpointed_and_copied_per_member():
    exchange = make_exchange()
    for step in range(2):
        exchange.exchange(grads_at(step), step=step)
    state = exchange.state_dict()
    assert set(state) == {"residual.w", "powersgd_q.w"} and state["powersgd_q.w"].shape == (P, 12, 2)

    restored = make_exchange()
    restored.load_state_dict(state)
    a, b = exchange.exchange(grads_at(2), step=2), restored.exchange(grads_at(2), step=2)
    assert torch.equal(a.grads["w"], b.grads["w"])  # continues from the same Q and residual

    exchange.copy_member_(0, 1)
    after = exchange.state_dict()
    for key in ("residual.w", "powersgd_q.w"):
        assert torch.equal(after[key][0], after[key][1])


def test_warmup_steps_are_dense_then_powersgd_starts():
    exchange = make_exchange(warmup_steps=1)
    grads = grads_at(0)
    dense = exchange.exchange(grads, step=0)
    assert dense.bytes.dense_step and torch.equal(dense.grads["w"], grads["w"])
    assert exchange.state_dict() == {}
    assert not exchange.exchange(grads_at(1), step=1).bytes.dense_step
