"""The exchange overlapped with backward (distrib/overlap.py) equals the exchange after
backward bit for bit, on 2 real gloo ranks over loopback (overlap_ranks.py): the same
averages in every gradient, the same coordinates sent, the same residuals and the same
bytes, at every step of every case (dense fp32 and fp16, top-k with a density per member,
warm-up, PowerSGD, shared and independent random-k), with gradient accumulation, a
parameter without a gradient and an empty one; and buckets do start while backward runs."""
from pathlib import Path

import pytest
import torch

from compression import CompressionConfig
from distrib.communicators import MpiCommunicator
from distrib.exchange import GradientExchange
from distrib.overlap import OverlappedExchange, bucket_names, unsupported_reason
from tests.integration.conftest import gloo_rank_results

RANKS = Path(__file__).with_name("overlap_ranks.py")
WORLD = 2


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    outdir = tmp_path_factory.mktemp("overlap")
    return gloo_rank_results(RANKS, outdir, world=WORLD, timeout=120)


def equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        (a[k] is None and b[k] is None) or (a[k] is not None and b[k] is not None and torch.equal(a[k], b[k]))
        for k in a)


def test_overlapped_equals_the_exchange_after_backward_bit_for_bit(ranks):
    for rank in ranks:
        for case, result in rank.items():
            assert result["buckets"] > 2, case  # several buckets, started in order
            for step, s in enumerate(result["steps"]):
                where = f"{case}, step {step}"
                assert equal(s["after"], s["during"]), where
                assert equal(s["residuals_after"], s["residuals_during"]), where
                assert s["bytes_after"] == s["bytes_during"], where
                assert equal(s["sent_after"], s["sent_during"]), where
                assert s["started_in_backward"] > 0, where  # it did overlap


def test_every_worker_ends_with_the_same_averages(ranks):
    for case in ranks[0]:
        for s0, s1 in zip(ranks[0][case]["steps"], ranks[1][case]["steps"]):
            assert equal(s0["during"], s1["during"]), case
        last = ranks[0][case]["steps"][-1]
        assert not torch.equal(last["during"]["w1"], torch.zeros_like(last["during"]["w1"]))
        assert torch.equal(last["during"]["unused"], torch.zeros_like(last["during"]["unused"]))


def test_global_scope_keeps_the_exchange_after_backward():
    cfg = CompressionConfig(method="topk", scope="global")
    assert "scope global" in unsupported_reason(cfg)
    exchange = GradientExchange(config=cfg, communicator=MpiCommunicator())
    with pytest.raises(ValueError, match="cannot overlap"):
        OverlappedExchange(exchange, torch.nn.Linear(2, 2).named_parameters())
    assert unsupported_reason(CompressionConfig(method="powersgd", rank=1)) is None


def test_buckets_fill_in_reverse_registration_order_up_to_the_cap():
    # fp32 parameters with a member axis of 1 (bytes: 4 per coordinate): the last registered
    # opens the first bucket; one that would overflow the cap opens the next; an empty one
    # joins none.
    params = [(name, torch.zeros(1, n)) for name, n in (("a", 4), ("empty", 0), ("b", 8), ("c", 2), ("d", 4))]
    assert bucket_names(params, bucket_bytes=32) == [["d", "c"], ["b"], ["a"]]
    assert bucket_names(params, bucket_bytes=1000) == [["d", "c", "b", "a"]]
    assert bucket_names(params, bucket_bytes=1) == [["d"], ["c"], ["b"], ["a"]]
