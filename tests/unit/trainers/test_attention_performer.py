"""Performer / FAVOR+: approximates softmax better with more features; the projection is
a deterministic function of (seed, layer, redraw count), the same on every worker."""
import pytest
import torch
import torch.nn.functional as F

from trainers.attention.config import PerformerAttentionConfig
from trainers.attention.performer import PerformerAttention

K = 16


def performer(*, causal: bool = False, layer: int = 0, **options) -> PerformerAttention:
    return PerformerAttention(PerformerAttentionConfig(**options), members=1, head_dim=K, causal=causal, layer=layer)


def inputs(length: int = 64):
    # Scale 0.5 keeps the logits q.k/sqrt(K) around unit size, where positive random
    # features have moderate variance (it grows like exp(|q| |k|)).
    generator = torch.Generator().manual_seed(0)
    q, k = (0.5 * torch.randn(2, 2, length, K, generator=generator) for _ in range(2))
    return q, k, torch.randn(2, 2, length, K, generator=generator)


@pytest.mark.parametrize("causal", [True, False], ids=["causal", "bidir"])
def test_error_shrinks_as_features_grow(causal):
    q, k, v = inputs()
    exact = F.scaled_dot_product_attention(q, k, v, is_causal=causal)

    def mean_error(nb_features: int) -> float:
        errors = [(performer(nb_features=nb_features, seed=seed, causal=causal)(q, k, v) - exact).norm() / exact.norm()
                  for seed in range(6)]
        return float(sum(errors) / len(errors))

    errors = [mean_error(m) for m in (16, 64, 256)]
    assert errors[0] > errors[1] > errors[2], errors
    assert errors[2] < 0.2, errors  # measured ~0.10-0.14; Monte Carlo error ~ 1/sqrt(nb_features)


def test_causal_form_equals_its_quadratic_form():
    kernel = performer(nb_features=32, chunk_size=8, causal=True)
    q, k, v = inputs(length=37)
    a_NHTT = (kernel._features(q, is_query=True) @ kernel._features(k, is_query=False).transpose(-2, -1)).tril()
    torch.testing.assert_close(kernel(q, k, v), (a_NHTT / a_NHTT.sum(-1, keepdim=True)) @ v, rtol=1e-5, atol=1e-5)


def test_projection_is_a_buffer_with_orthogonal_blocks():
    kernel = performer(nb_features=40)
    assert "projection_MK" in kernel.state_dict() and not list(kernel.parameters())
    w_MK = kernel.projection_MK
    assert w_MK.shape == (40, K)
    directions = w_MK / w_MK.norm(dim=1, keepdim=True)
    for block in (directions[:K], directions[K:2 * K]):
        torch.testing.assert_close(block @ block.T, torch.eye(K), rtol=0, atol=1e-5)


def test_projection_is_identical_on_simulated_workers_and_leaves_the_global_rng_alone():
    rng_before = torch.random.get_rng_state()
    worker0, worker1 = performer(seed=7, layer=2), performer(seed=7, layer=2)
    assert torch.equal(worker0.projection_MK, worker1.projection_MK)
    assert not torch.equal(worker0.projection_MK, performer(seed=7, layer=3).projection_MK)
    assert not torch.equal(worker0.projection_MK, performer(seed=8, layer=2).projection_MK)
    worker0.train()(*inputs())
    assert torch.equal(torch.random.get_rng_state(), rng_before)


def test_redraws_every_interval_training_calls_only():
    kernel = performer(redraw_interval=3, seed=1)
    first = kernel.projection_MK.clone()
    q, k, v = inputs(length=8)
    kernel.eval()
    for _ in range(5):
        kernel(q, k, v)  # eval calls do not count
    kernel.train()
    for _ in range(3):  # calls 0, 1, 2 use draw 0
        kernel(q, k, v)
    assert torch.equal(kernel.projection_MK, first)
    kernel(q, k, v)  # call 3 starts draw 1
    assert not torch.equal(kernel.projection_MK, first)
    assert torch.equal(kernel.projection_MK, performer(seed=1)._draw(1))

    # A worker resumed from this state continues the same schedule.
    resumed = performer(redraw_interval=3, seed=1).train()
    resumed.load_state_dict(kernel.state_dict())
    for worker in (kernel, resumed):
        for _ in range(3):  # calls 4, 5, 6: call 6 starts draw 2
            worker(q, k, v)
    assert torch.equal(resumed.projection_MK, kernel.projection_MK)
    assert torch.equal(resumed.projection_MK, performer(seed=1)._draw(2))


def test_no_redraw_when_interval_is_zero():
    kernel = performer(redraw_interval=0).train()
    first = kernel.projection_MK.clone()
    for _ in range(4):
        kernel(*inputs(length=8))
    assert torch.equal(kernel.projection_MK, first)
