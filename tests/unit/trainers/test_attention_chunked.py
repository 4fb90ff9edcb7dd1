"""The cross-chunk scan shared by linear, performer and flash: its hand-written backward
matches autograd's numerical gradient, and its output the direct sum over earlier chunks."""
import torch

from trainers.attention.chunked import cross_chunk_attention


def test_equals_sum_over_earlier_chunks():
    generator = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 3, 5, 4, 6, generator=generator) for _ in range(2))  # [N, H, G, L, M]
    v = torch.randn(2, 3, 5, 4, 7, generator=generator)
    out = cross_chunk_attention(q, k, v)
    for g in range(5):
        state = sum((k[:, :, j].transpose(-2, -1) @ v[:, :, j] for j in range(g)), torch.zeros(2, 3, 6, 7))
        torch.testing.assert_close(out[:, :, g], q[:, :, g] @ state)


def test_backward_matches_numerical_gradient():
    generator = torch.Generator().manual_seed(1)
    inputs = [torch.randn(2, 4, 3, size, generator=generator, dtype=torch.float64, requires_grad=True)
              for size in (5, 5, 3)]
    assert torch.autograd.gradcheck(cross_chunk_attention, inputs)
