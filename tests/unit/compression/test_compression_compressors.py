"""Compressors: selection, seeding, payload sizes, round trips, global RNG untouched.

Shape legend: P members, N coordinates per member, k selected per member, K = P k (a
payload's rows concatenated).
"""

from __future__ import annotations

import pytest
import torch

from compression import (
                         CompressionConfig,
                         NoCompressor,
                         RandomKCompressor,
                         TopKCompressor,
                         build_compressor,
                         byte_report,
                         decompress,
                         num_selected,
                         )
from compression.selection import _batched_candidates, topk_indices


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_num_selected():
    assert num_selected(1000, 0.01) == 10
    assert num_selected(10, 0.01) == 1  # never zero for a non-empty tensor
    assert num_selected(7, 1.0) == 7
    assert num_selected(0, 0.5) == 0


def test_topk_picks_exactly_the_k_largest_magnitudes_per_member():
    grad_PN = randn(3, 500)
    payload = TopKCompressor(density=0.02).compress(grad_PN, step=0, tensor_id="w")
    k = 10
    assert payload.idx_K.shape == (3 * k,) and payload.k_P == (k,) * 3 and payload.idx_K.dtype == torch.int32
    idx_Pk, values_Pk = payload.idx_K.view(3, k), payload.values_K.view(3, k)
    for p in range(3):
        want = set(grad_PN[p].abs().topk(k).indices.tolist())
        assert set(idx_Pk[p].tolist()) == want
        # values are the signed entries at those indices
        torch.testing.assert_close(values_Pk[p], grad_PN[p, idx_Pk[p].long()])


def test_topk_threshold_path_matches_torch_topk_on_large_rows():
    abs_PN = randn(2, 1 << 19).abs()
    for k in (5, 524, 5243, 52429):
        gen = torch.Generator().manual_seed(k)
        got = topk_indices(abs_PN, k, gen)
        want = abs_PN.topk(k, dim=1).indices
        for p in range(2):
            assert set(got[p].tolist()) == set(want[p].tolist())


@pytest.mark.parametrize("k", [5, 524, 5243])
def test_batched_threshold_path_picks_what_the_per_row_path_and_torch_topk_pick(k):
    abs_PN = randn(3, 1 << 19, seed=k).abs()
    per_row = topk_indices(abs_PN, k, torch.Generator().manual_seed(k), batched=False)
    batched = topk_indices(abs_PN, k, torch.Generator().manual_seed(k), batched=True)
    want = abs_PN.topk(k, dim=1).indices
    assert batched.shape == (3, k)
    for p in range(3):
        assert set(batched[p].tolist()) == set(per_row[p].tolist()) == set(want[p].tolist())


def test_batched_candidates_fall_back_to_the_full_topk_for_a_row_whose_threshold_is_too_high():
    abs_PN = randn(3, 4000, seed=5).abs()
    k = 40
    kth_P = abs_PN.topk(k, dim=1).values[:, -1]
    # Row 0: every entry a candidate; row 1: just enough; row 2: too few (above its k-th).
    thr_P = torch.stack([torch.tensor(0.0), kth_P[1], kth_P[2] * 1.01])
    got = _batched_candidates(abs_PN, k, thr_P)
    want = abs_PN.topk(k, dim=1).indices
    for p in range(3):
        assert set(got[p].tolist()) == set(want[p].tolist())


def test_randomk_shared_same_indices_across_workers_for_same_seed_step_tensor():
    grad_PN = randn(2, 1000)
    # separately constructed compressors, as on two workers with different ranks and data
    w0 = RandomKCompressor(density=0.05, mode="shared", seed=11, rank=0)
    w1 = RandomKCompressor(density=0.05, mode="shared", seed=11, rank=1)
    a = w0.compress(grad_PN, step=4, tensor_id="layer.w")
    b = w1.compress(randn(2, 1000, seed=1), step=4, tensor_id="layer.w")
    assert torch.equal(a.idx_K, b.idx_K)
    assert not a.indices_on_wire  # shared: values only (all-reduced: test_compression_methods.py)
    # ... and different across steps, tensors, seeds, and members
    assert not torch.equal(a.idx_K, w0.compress(grad_PN, step=5, tensor_id="layer.w").idx_K)
    assert not torch.equal(a.idx_K, w0.compress(grad_PN, step=4, tensor_id="layer.b").idx_K)
    other_seed = RandomKCompressor(density=0.05, mode="shared", seed=12)
    assert not torch.equal(a.idx_K, other_seed.compress(grad_PN, step=4, tensor_id="layer.w").idx_K)
    row0, row1 = a.idx_K.split(a.k_P)
    assert not torch.equal(row0, row1)


def test_randomk_independent_differs_across_ranks_but_is_reproducible():
    grad_PN = randn(2, 1000)
    idx = {
        r: RandomKCompressor(density=0.05, mode="independent", seed=11, rank=r)
        .compress(grad_PN, step=4, tensor_id="w")
        .idx_K
        for r in (0, 1)
    }
    assert not torch.equal(idx[0], idx[1])
    again = RandomKCompressor(density=0.05, mode="independent", seed=11, rank=1)
    assert torch.equal(idx[1], again.compress(grad_PN, step=4, tensor_id="w").idx_K)


@pytest.mark.parametrize("n,density", [(1000, 0.01), (1000, 0.3), (50, 0.9), (100_000, 0.001)])
def test_randomk_indices_are_distinct_and_in_range(n, density):
    idx_K = RandomKCompressor(density=density).indices((4, n), step=0, tensor_id="t")
    k = num_selected(n, density)
    assert idx_K.shape == (4 * k,)
    for row in idx_K.split(k):
        assert row.unique().numel() == k and 0 <= row.min() and row.max() < n


def test_randomk_is_roughly_uniform():
    counts_N = torch.zeros(20)
    rk = RandomKCompressor(density=0.1)
    for step in range(2000):
        counts_N += torch.bincount(rk.indices((1, 20), step=step, tensor_id="u"), minlength=20)  # P = 1: K = k
    # each coordinate expected 2000 * 2/20 = 200 times
    assert counts_N.min() > 150 and counts_N.max() < 250


@pytest.mark.parametrize(
    "cls,kwargs",
    [
        (TopKCompressor, {}),
        (RandomKCompressor, {"mode": "shared"}),
        (RandomKCompressor, {"mode": "independent"}),
        (NoCompressor, {}),
    ],
)
def test_density_one_round_trip_is_identity(cls, kwargs):
    x_PN = randn(3, 37)
    c = cls(density=1.0, **kwargs)
    torch.testing.assert_close(c.decompress(c.compress(x_PN, step=2, tensor_id="x")), x_PN, rtol=0, atol=0)


@pytest.mark.parametrize(
    "value_dtype,value_bytes", [("fp32", 4), ("fp16", 2), ("bf16", 2)]
)
def test_payload_nbytes_exact(value_dtype, value_bytes):
    P, n, k = 3, 1000, 10
    x_PN = randn(P, n)
    topk = TopKCompressor(density=0.01, value_dtype=value_dtype).compress(x_PN, step=0, tensor_id="a")
    assert topk.nbytes == P * k * (value_bytes + 4)
    assert topk.values_K.dtype == {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[value_dtype]
    shared = RandomKCompressor(density=0.01, value_dtype=value_dtype).compress(x_PN, step=0, tensor_id="a")
    assert shared.nbytes == P * k * value_bytes  # no indices on the wire
    indep = RandomKCompressor(density=0.01, value_dtype=value_dtype, mode="independent")
    assert indep.compress(x_PN, step=0, tensor_id="a").nbytes == P * k * (value_bytes + 4)
    dense = NoCompressor(value_dtype=value_dtype).compress(x_PN, step=0, tensor_id="a")
    assert dense.nbytes == P * n * value_bytes
    assert dense.dense_nbytes == topk.dense_nbytes == P * n * 4


@pytest.mark.parametrize(
    "method,mode,value_dtype,ratio",
    [
        ("topk", "shared", "fp32", 0.02),
        ("topk", "shared", "fp16", 0.015),
        ("randomk", "shared", "fp32", 0.01),
        ("randomk", "shared", "fp16", 0.005),
        ("randomk", "independent", "fp32", 0.02),
        ("none", "shared", "fp32", 1.0),
        ("none", "shared", "bf16", 0.5),
    ],
)
def test_byte_report_ratios_at_one_percent(method, mode, value_dtype, ratio):
    cfg = CompressionConfig(method=method, density=0.01, randomk_mode=mode, value_dtype=value_dtype)
    c = build_compressor(cfg)
    payloads = [c.compress(randn(2, n, seed=n), step=0, tensor_id=str(n)) for n in (1000, 5000)]
    report = byte_report(payloads, members=2, dense_step=method == "none")
    assert report.dense_bytes == 4 * 6000
    assert report.ratio == pytest.approx(ratio)
    assert report.as_dict()["ratio"] == pytest.approx(ratio)


def test_wire_cast_clamps_instead_of_overflowing():
    x_PN = torch.tensor([[1e6, -1e6, 1.0]])
    payload = NoCompressor(value_dtype="fp16").compress(x_PN, step=0, tensor_id="x")
    assert torch.isfinite(payload.values_K).all()
    assert payload.values_K[0] == torch.finfo(torch.float16).max


def test_decompress_places_values_and_zeros():
    x_PN = randn(2, 100)
    payload = TopKCompressor(density=0.05).compress(x_PN, step=0, tensor_id="x")
    dense_PN = decompress(payload, torch.float64)
    assert dense_PN.dtype == torch.float64 and dense_PN.shape == (2, 100)
    assert (dense_PN != 0).sum(dim=1).tolist() == [5, 5]


def test_compressors_never_touch_the_global_rng():
    state = torch.random.get_rng_state()
    x_PN = randn(2, 1 << 19)  # large enough for top-k's sampled threshold
    for cfg in [
        CompressionConfig(method="topk", density=0.01),
        CompressionConfig(method="randomk", density=0.01),
        CompressionConfig(method="randomk", density=0.5, randomk_mode="independent"),
    ]:
        build_compressor(cfg, seed=3, rank=1).compress(x_PN, step=7, tensor_id="w")
    assert torch.equal(torch.random.get_rng_state(), state)


def test_empty_tensor():
    x_PN = torch.zeros(2, 0)
    for c in (TopKCompressor(density=0.1), RandomKCompressor(density=0.1), NoCompressor()):
        payload = c.compress(x_PN, step=0, tensor_id="e")
        assert payload.nbytes == 0
        assert c.decompress(payload).shape == (2, 0)
