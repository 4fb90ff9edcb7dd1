"""Error feedback: nothing is lost, only delayed; per-member state for PBT; checkpoints.

Shape legend: P members, N coordinates per member.
"""

from __future__ import annotations

import io

import pytest
import torch

from compression import CompressionConfig, ErrorFeedback, build_compressor, decompress

P, N, STEPS = 3, 400, 50


def grads(step: int, dtype=torch.float64):
    gen = torch.Generator().manual_seed(step)
    # heavy-tailed scale per coordinate, so top-k keeps choosing a similar subset and
    # the residual of the others grows (the case error feedback exists for)
    scale_N = torch.logspace(-3, 1, N, dtype=dtype)
    return torch.randn(P, N, generator=gen, dtype=dtype) * scale_N


@pytest.mark.parametrize(
    "cfg",
    [
        CompressionConfig(method="topk", density=0.02),
        CompressionConfig(method="topk", density=0.02, value_dtype="fp16"),
        CompressionConfig(method="randomk", density=0.05),
        CompressionConfig(method="randomk", density=0.05, randomk_mode="independent", value_dtype="fp16"),
        CompressionConfig(method="randomk", density=0.05, value_dtype="bf16"),
        CompressionConfig(method="none", value_dtype="fp16"),
    ],
    ids=lambda c: f"{c.method}-{c.randomk_mode}-{c.value_dtype}",
)
def test_sent_plus_residual_equals_sum_of_gradients(cfg):
    compressor = build_compressor(cfg, seed=1, rank=0)
    ef = ErrorFeedback()
    fed_PN = torch.zeros(P, N, dtype=torch.float64)
    sent_PN = torch.zeros(P, N, dtype=torch.float64)
    for step in range(STEPS):
        g_PN = grads(step)
        payload = ef.step("w", g_PN, lambda acc: compressor.compress(acc, step=step, tensor_id="w"))
        fed_PN += g_PN
        sent_PN += decompress(payload, torch.float64)  # what actually went on the wire
        # per step the identity is exact: sent + new residual == old residual + grad
    residual_PN = ef.residual("w")
    assert residual_PN.dtype == torch.float64 and residual_PN.shape == (P, N)
    torch.testing.assert_close(sent_PN + residual_PN, fed_PN, rtol=0, atol=1e-12)
    if cfg.method != "none":
        assert residual_PN.abs().sum() > 0  # something was actually held back


def test_per_step_identity_is_exact_with_fp16_rounding():
    compressor = build_compressor(CompressionConfig(method="topk", density=0.1, value_dtype="fp16"))
    ef = ErrorFeedback()
    for step in range(5):
        # A copy: step() accumulates into the residual in place.
        old_PN = ef.residual("w").clone() if ef.residual("w") is not None else torch.zeros(P, N, dtype=torch.float64)
        g_PN = grads(step)
        payload = ef.step("w", g_PN, lambda acc: compressor.compress(acc, step=step, tensor_id="w"))
        assert torch.equal(decompress(payload, torch.float64) + ef.residual("w"), old_PN + g_PN)


def test_the_residual_accumulates_in_place_and_the_gradient_is_left_alone():
    compressor = build_compressor(CompressionConfig(method="topk", density=0.1))
    ef = ErrorFeedback()
    g0_PN = grads(0)
    kept_PN = g0_PN.clone()
    ef.step("w", g0_PN, lambda acc: compressor.compress(acc, step=0, tensor_id="w"))
    assert torch.equal(g0_PN, kept_PN)  # the first step copied it
    residual_PN = ef.residual("w")
    expected_PN = residual_PN + grads(1)  # what compensate() computes in a new tensor
    payload = ef.step("w", grads(1), lambda acc: compressor.compress(acc, step=1, tensor_id="w"))
    assert ef.residual("w") is residual_PN  # no model-sized allocation per step
    assert torch.equal(residual_PN + decompress(payload, residual_PN.dtype), expected_PN)


def test_disabled_keeps_nothing():
    compressor = build_compressor(CompressionConfig(method="topk", density=0.1))
    ef = ErrorFeedback(enabled=False)
    g_PN = grads(0)
    payload = ef.step("w", g_PN, lambda acc: compressor.compress(acc, step=0, tensor_id="w"))
    assert ef.residual("w") is None and ef.state_dict() == {}
    # the compressor saw the raw gradient
    assert torch.equal(payload.idx_K.long().view(P, -1).sort().values,
                       g_PN.abs().topk(40, dim=1).indices.sort().values)
    ef.load_state_dict({"residual.w": torch.ones(P, N)})
    assert ef.residual("w") is None


def test_compensate_adds_residual_and_keeps_fp32_for_low_precision_grads():
    ef = ErrorFeedback()
    ef.update("w", torch.zeros(P, N), torch.full((P, N), -0.5))  # residual = +0.5
    acc = ef.compensate("w", torch.ones(P, N, dtype=torch.bfloat16))
    assert acc.dtype == torch.float32 and torch.all(acc == 1.5)
    with pytest.raises(ValueError, match="parameter set changed"):
        ef.compensate("w", torch.ones(P, N + 1))


def test_copy_member_in_place():
    ef = ErrorFeedback()
    for tid in ("a", "b"):
        ef.update(tid, grads(len(tid)).float(), torch.zeros(P, N))
    before = {tid: ef.residual(tid).clone() for tid in ("a", "b")}
    storage = ef.residual("a").data_ptr()
    ef.copy_member_(0, 2)
    assert ef.residual("a").data_ptr() == storage  # in place
    for tid in ("a", "b"):
        r = ef.residual(tid)
        assert torch.equal(r[0], before[tid][2])
        assert torch.equal(r[1:], before[tid][1:])


def test_state_dict_round_trip_through_weights_only_load():
    compressor = build_compressor(CompressionConfig(method="randomk", density=0.1))
    ef = ErrorFeedback()
    for step in range(3):
        for tid in ("layer.0.w", "layer.1.w"):
            ef.step(tid, grads(step).float(), lambda acc, s=step, t=tid: compressor.compress(acc, step=s, tensor_id=t))
    buf = io.BytesIO()
    torch.save(ef.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert sorted(state) == ["residual.layer.0.w", "residual.layer.1.w"]
    restored = ErrorFeedback()
    restored.load_state_dict(state)
    for tid in ef.tensor_ids():
        assert torch.equal(restored.residual(tid), ef.residual(tid))
    with pytest.raises(KeyError, match="residual."):
        restored.load_state_dict({"momentum.w": torch.zeros(1)})
