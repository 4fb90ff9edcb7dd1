"""NCCL's flat all-gather (one all_gather_into_tensor into one buffer), run on 2 real gloo
ranks: it gives exactly what gloo's 1 MiB pieces give, and every exchange issues ONE
collective (PowerSGD: two all-reduces) on the flat path (scripts/flat_collectives_worker.py)."""
from pathlib import Path

import pytest
import torch

from tests.integration.conftest import gloo_rank_results

SCRIPT = Path(__file__).parent / "scripts" / "flat_collectives_worker.py"
WORLD = 2


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    outdir = tmp_path_factory.mktemp("flat")
    return gloo_rank_results(SCRIPT, outdir, world=WORLD, timeout=60)


def test_gloo_takes_the_pieces_by_default(ranks):
    assert [r["default_flat"] for r in ranks] == [False, False]


def test_flat_gather_equals_the_pieced_gather(ranks):
    for rank in ranks:
        for flat, pieces in zip(rank["flat"]["gathers"], rank["pieces"]["gathers"]):
            assert torch.equal(flat, pieces)
    big, half = ranks[0]["flat"]["gathers"]
    assert torch.equal(big, torch.stack([torch.arange(700_001, dtype=torch.float32) * (w + 1) for w in range(WORLD)]))
    assert half.dtype == torch.float16 and half[:, 0].tolist() == [0.5, 1.0]


@pytest.mark.parametrize("case", ["dense", "topk_fp16", "randomk_independent", "powersgd"])
def test_flat_exchange_is_bit_identical_to_the_pieced_one_on_every_rank(ranks, case):
    reference = ranks[0]["pieces"]["exchanges"][case]
    for rank in ranks:
        for path in ("flat", "pieces"):
            for step, averaged in enumerate(rank[path]["exchanges"][case]):
                for name, avg in averaged.items():
                    assert torch.equal(avg, reference[step][name]), (path, step, name)


def test_one_collective_per_exchange_on_the_flat_path(ranks):
    calls = ranks[0]["flat"]["calls"]
    gather = {"all_gather_single": 1} if "all_gather_single" in calls["topk_fp16/1"] else {"all_gather_into_tensor": 1}
    assert calls["dense/0"] == calls["dense/1"] == {"all_reduce": 1}
    assert calls["topk_fp16/1"] == calls["randomk_independent/1"] == gather
    assert calls["powersgd/1"] == {"all_reduce": 2}  # P factors (with the dense tensors), then Q
    pieced = ranks[0]["pieces"]["calls"]["topk_fp16/1"]
    assert set(pieced) == {"all_gather"}  # gloo's pieces: one call per 1 MiB piece
