"""The network model (launch/study/netmodel.py) on cases computed by hand."""
import math

import pytest

from launch.study.netmodel import (
    ALL_GATHER,
    ALL_REDUCE,
    TWO_ALL_REDUCES,
    MethodRow,
    bytes_per_second,
    collective_for,
    communication_s,
    crossover_workers,
    gathered_decompress_s,
    overlapped_step_s,
    project,
    projected_step_s,
    ring_all_gather_s,
    ring_all_reduce_s,
    two_ring_all_reduces_s,
)


def test_bandwidth_unit_is_decimal_gigabits():
    assert bytes_per_second(1) == 125_000_000
    assert bytes_per_second(8) == 1e9
    with pytest.raises(ValueError):
        bytes_per_second(0)


def test_ring_all_reduce_by_hand():
    # 1 GB over 8 Gbit/s (1 GB/s), W = 2: 2·1/2 · 1 s = 1 s; latency 2·(2-1) = 2 messages.
    assert ring_all_reduce_s(1e9, workers=2, bandwidth_gbps=8, latency_s=0) == pytest.approx(1.0)
    assert ring_all_reduce_s(1e9, workers=2, bandwidth_gbps=8, latency_s=1e-3) == pytest.approx(1.002)
    # W = 4: 2·3/4 = 1.5 s, plus 2·3 = 6 latencies of 1 ms.
    assert ring_all_reduce_s(1e9, workers=4, bandwidth_gbps=8, latency_s=1e-3) == pytest.approx(1.506)
    # A recorded dense payload (92,032 B), W = 8, 1 Gbit/s, α = 10 µs:
    # 2·7/8 · 92032 / 1.25e8 = 1.288448e-3 s, + 14 · 1e-5 = 1.4e-4 s.
    assert ring_all_reduce_s(92_032, workers=8, bandwidth_gbps=1, latency_s=10e-6) == pytest.approx(1.428448e-3)


def test_ring_all_gather_by_hand():
    # 100 MB per worker, W = 4, 1 GB/s: 3 rounds of 0.1 s, + 3 latencies.
    assert ring_all_gather_s(1e8, workers=4, bandwidth_gbps=8, latency_s=1e-3) == pytest.approx(0.303)
    # 9,232 B per worker, W = 128, 10 Gbit/s: 127 · 9232 / 1.25e9 = 9.379712e-4 s, + 127 · 1e-5.
    assert ring_all_gather_s(9232, workers=128, bandwidth_gbps=10, latency_s=1e-5) == pytest.approx(2.207971e-3)


def test_one_worker_communicates_nothing():
    assert ring_all_reduce_s(1e9, workers=1, bandwidth_gbps=1) == 0.0
    assert ring_all_gather_s(1e9, workers=1, bandwidth_gbps=1) == 0.0
    assert projected_step_s(0.25, "topk", 1e9, workers=1, bandwidth_gbps=1) == 0.25


def test_collective_per_method():
    assert collective_for("none") == ALL_REDUCE
    assert collective_for("randomk", "shared") == ALL_REDUCE
    assert collective_for("randomk", "independent") == ALL_GATHER
    assert collective_for("topk") == ALL_GATHER
    assert collective_for("powersgd") == TWO_ALL_REDUCES
    with pytest.raises(ValueError, match="dgc"):
        collective_for("dgc")


def test_powersgd_is_two_ring_all_reduces_by_hand():
    # P factors 6e5 B (with the dense 1-D tensors), Q factors 4e5 B: S = 1e6 B, W = 4,
    # 8 Gbit/s (1 GB/s), α = 1 ms: 2·3/4 · 1e6 / 1e9 = 1.5 ms, + 2 · 2·3 = 12 latencies.
    assert two_ring_all_reduces_s(1e6, workers=4, bandwidth_gbps=8, latency_s=1e-3) == pytest.approx(0.0135)
    split = (ring_all_reduce_s(6e5, workers=4, bandwidth_gbps=8, latency_s=1e-3)
             + ring_all_reduce_s(4e5, workers=4, bandwidth_gbps=8, latency_s=1e-3))
    assert split == pytest.approx(0.0135)
    assert communication_s("powersgd", 1e6, workers=4, bandwidth_gbps=8, latency_s=1e-3) == pytest.approx(0.0135)
    assert two_ring_all_reduces_s(1e6, workers=1, bandwidth_gbps=8) == 0.0


def test_projected_step_adds_compute_and_the_methods_collective():
    # top-k: all-gather of 8e4 B, W = 2, 1 Gbit/s, no latency: 8e4 / 1.25e8 = 6.4e-4 s.
    assert projected_step_s(0.1, "topk", 8e4, workers=2, bandwidth_gbps=1, latency_s=0) == pytest.approx(0.10064)
    # the same bytes through independent random-k (all-gather) and shared random-k (all-reduce, 2·1/2).
    assert communication_s("randomk", 8e4, workers=2, bandwidth_gbps=1, randomk_mode="independent",
                           latency_s=0) == pytest.approx(6.4e-4)
    assert communication_s("randomk", 8e4, workers=4, bandwidth_gbps=1, latency_s=0) == pytest.approx(
        2 * 3 / 4 * 6.4e-4)


# Dense 4 MB (1M fp32 coordinates), top-k 1% fp32 (values + int32 indices: 2% = 80 kB),
# shared random-k 1% fp32 (values only: 1% = 40 kB); equal compute of 0.1 s.
ROWS = [MethodRow("dense", "none", 0.1, 4e6), MethodRow("topk 1%", "topk", 0.1, 8e4, density=0.01),
        MethodRow("randomk 1%", "randomk", 0.1, 4e4, density=0.01)]


def test_projection_table_and_winners_by_hand():
    p = project(ROWS[:2], workers=(2, 128), bandwidths_gbps=(1, 100), latency_s=0.0)
    two, many = p.cell(2, 1), p.cell(128, 1)
    # W = 2, 1 Gbit/s: dense 2·1/2·4e6/1.25e8 = 0.032 s; top-k 8e4/1.25e8 = 6.4e-4 s.
    assert two.step_s["dense"] == pytest.approx(0.132)
    assert two.step_s["topk 1%"] == pytest.approx(0.10064)
    assert two.winner == "topk 1%"
    # W = 128: dense 2·127/128·0.032 = 0.0635 s; top-k 127·6.4e-4 = 0.08128 s: dense wins.
    assert many.step_s["dense"] == pytest.approx(0.1635)
    assert many.step_s["topk 1%"] == pytest.approx(0.18128)
    assert many.winner == "dense"
    assert many.comm_share(ROWS[1]) == pytest.approx(0.08128 / 0.18128)
    # top-k's crossover by the bandwidth terms: W < 2 · 4e6 / 8e4 = 100.
    assert crossover_workers(4e6, 8e4) == pytest.approx(100)
    assert set(p.cells) == {(2, 1.0), (2, 100.0), (128, 1.0), (128, 100.0)}


def test_shared_randomk_wins_everywhere_on_time_alone():
    p = project(ROWS, latency_s=0.0)
    assert {cell.winner for cell in p.cells.values()} == {"randomk 1%"}
    # With latency, more compute loses even at zero bytes: a dense row with no compute wins.
    fast = [MethodRow("dense-fast", "none", 0.0, 4e6), *ROWS]
    assert project(fast, workers=(2,), bandwidths_gbps=(100,)).cell(2, 100).winner == "dense-fast"


def test_ties_go_to_the_first_row_and_bad_input_is_refused():
    rows = [MethodRow("a", "none", 0.1, 0.0), MethodRow("b", "none", 0.1, 0.0)]
    assert project(rows, workers=(8,), bandwidths_gbps=(10,)).cell(8, 10).winner == "a"
    with pytest.raises(ValueError, match="unique"):
        project([rows[0], rows[0]])
    with pytest.raises(ValueError):
        project([])
    with pytest.raises(ValueError):
        ring_all_reduce_s(-1, workers=2, bandwidth_gbps=1)
    assert math.isfinite(project(ROWS).cell(128, 1).step_s["dense"])


def test_gathered_decompress_grows_with_the_other_workers():
    # (W-1)·K·c: nothing with one worker, 3 payloads of 1e6 entries at 20 ns for W = 4
    assert gathered_decompress_s(1e6, workers=1, seconds_per_entry=2e-8) == 0
    assert gathered_decompress_s(1e6, workers=4, seconds_per_entry=2e-8) == pytest.approx(0.06)
    with pytest.raises(ValueError, match="entries >= 0"):
        gathered_decompress_s(-1, workers=2, seconds_per_entry=2e-8)


def test_overlap_by_hand():
    # compute 1.0 s of which backward 0.6 s, comm 0.8 s, 4 buckets: the link is slower than
    # the backward, so the first bucket's backward (0.15 s) cannot hide: 0.4 + 0.8 + 0.15.
    assert overlapped_step_s(1.0, 0.8, backward_s=0.6, buckets=4) == pytest.approx(1.35)
    # comm 0.2 s: the link is faster, the last bucket's comm (0.05 s) trails the backward.
    assert overlapped_step_s(1.0, 0.2, backward_s=0.6, buckets=4) == pytest.approx(0.4 + 0.6 + 0.05)


def test_overlap_limits():
    # One bucket: nothing overlaps, compute + comm as projected_step_s without overlap.
    assert overlapped_step_s(1.0, 0.8, backward_s=0.6, buckets=1) == pytest.approx(1.8)
    # Many buckets: rest + max(backward, comm).
    assert overlapped_step_s(1.0, 0.8, backward_s=0.6, buckets=10**9) == pytest.approx(0.4 + 0.8)
    assert overlapped_step_s(1.0, 0.3, backward_s=0.6, buckets=10**9) == pytest.approx(1.0)
    # No communication (one worker): the compute as measured, whatever the buckets.
    assert overlapped_step_s(0.7, 0.0, backward_s=0.5, buckets=5) == pytest.approx(0.7)
    # Never faster than either part alone, never slower than no overlap.
    for comm in (0.0, 0.1, 0.6, 2.0):
        for n in (1, 2, 7):
            step = overlapped_step_s(1.0, comm, backward_s=0.6, buckets=n)
            assert max(1.0, 0.4 + comm) <= step + 1e-12 <= 1.0 + comm + 1e-12


def test_overlap_refuses_impossible_inputs():
    with pytest.raises(ValueError, match="buckets"):
        overlapped_step_s(1.0, 0.5, backward_s=0.5, buckets=0)
    with pytest.raises(ValueError, match="backward_s"):
        overlapped_step_s(1.0, 0.5, backward_s=1.5, buckets=2)
    with pytest.raises(ValueError, match="comm_s"):
        overlapped_step_s(1.0, -0.1, backward_s=0.5, buckets=2)
