"""Linear attention: the chunked causal form and the bidirectional form equal the naive
quadratic form of the same kernel (phi(q) phi(k)^T, row-normalized)."""
import pytest
import torch
import torch.nn.functional as F

from trainers.attention.config import LinearAttentionConfig
from trainers.attention.linear import LinearAttention


def naive_linear_attention(q_NHTK, k_NHTK, v_NHTK, *, causal: bool):
    """The T x T form: A = phi(q) phi(k)^T, masked, each row divided by its sum."""
    a_NHTT = (F.elu(q_NHTK) + 1) @ (F.elu(k_NHTK) + 1).transpose(-2, -1)
    if causal:
        a_NHTT = a_NHTT.tril()
    return (a_NHTT / a_NHTT.sum(-1, keepdim=True)) @ v_NHTK


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
@pytest.mark.parametrize("length, chunk_size", [(1, 4), (7, 4), (16, 4), (37, 8), (37, 64), (50, 1)])
def test_equals_naive_quadratic_form(causal, length, chunk_size):
    generator = torch.Generator().manual_seed(length)
    q, k, v = (torch.randn(2, 3, length, 8, generator=generator) for _ in range(3))
    kernel = LinearAttention(LinearAttentionConfig(chunk_size=chunk_size), members=1, head_dim=8, causal=causal)
    # The reference runs in fp64, the kernel in fp32: the gap is the chunked form's own rounding.
    expected = naive_linear_attention(q.double(), k.double(), v.double(), causal=causal).float()
    torch.testing.assert_close(kernel(q, k, v), expected, rtol=1e-5, atol=1e-5)
