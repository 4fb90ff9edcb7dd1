"""Two gloo workers (real torch.distributed over 127.0.0.1) run PowerSGD through
GradientExchange (scripts/powersgd_worker.py): identical averages on both workers, the
dense average at full rank, residual = accumulated gradient - approximation, exact bytes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.integration.conftest import gloo_rank_results

SCRIPT = Path(__file__).parent / "scripts" / "powersgd_worker.py"
WORLD = 2


@pytest.fixture(scope="module")
def ranks(tmp_path_factory) -> list[dict]:
    outdir = tmp_path_factory.mktemp("powersgd")
    return gloo_rank_results(SCRIPT, outdir, world=WORLD)


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", ["rank2", "full"])
def test_both_workers_get_identical_averages_and_warm_start(ranks, case):
    for a, b in zip(ranks[0][case], ranks[1][case]):
        for name in a["averaged"]:
            assert torch.equal(a["averaged"][name], b["averaged"][name]), name
        warm = {k for k in a["state"] if k.startswith("powersgd_q.")}
        assert warm == {k for k in b["state"] if k.startswith("powersgd_q.")}
        for key in warm:  # the all-reduced Q: the same on every worker
            assert torch.equal(a["state"][key], b["state"][key]), key


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_full_rank_equals_the_dense_average(ranks):
    for step, (a, b) in enumerate(zip(ranks[0]["full"], ranks[1]["full"])):
        for name, avg in a["averaged"].items():
            dense = (a["grads"][name] + b["grads"][name]) / WORLD
            torch.testing.assert_close(avg, dense, rtol=0, atol=1e-5, msg=f"step {step} {name}")


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_rank2_residual_is_accumulated_gradient_minus_approximation(ranks):
    for rank, steps in enumerate(ranks):
        other = ranks[1 - rank]["rank2"]
        assert steps["rank2"][0]["bytes"]["dense_step"]  # the warm-up step
        previous = {}
        for step in range(1, len(steps["rank2"])):
            s = steps["rank2"][step]
            residual_ids = {k.removeprefix("residual.") for k in s["state"] if k.startswith("residual.")}
            # Factorized: the three matrices. Dense (bias, one-element, empty): no residual.
            assert residual_ids == {"layer1.weight", "conv.weight", "embed.weight"}
            for name in residual_ids:
                acc = s["grads"][name] + previous.get(name, 0)
                expected = (acc - s["averaged"][name]).reshape(acc.shape[0], -1)
                torch.testing.assert_close(s["state"]["residual." + name], expected)
            for name in ("layer1.bias", "head.scale"):  # dense: the exact average
                dense = (s["grads"][name] + other[step]["grads"][name]) / WORLD
                torch.testing.assert_close(s["averaged"][name], dense)
            previous = {n: s["state"]["residual." + n].reshape(s["grads"][n].shape) for n in residual_ids}


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_bytes_are_the_factors_and_dense_tensors(ranks):
    # Per member, rank 2, fp32 (4 bytes a value on the wire):
    #   layer1.weight [16, 24]: (16 + 24) * 2 = 80     (80 * 2 < 384: factorized)
    #   conv.weight [12, 4, 2] as [12, 8]: (12 + 8) * 2 = 40   (40 * 2 < 96: factorized)
    #   embed.weight [50, 8]: (50 + 8) * 2 = 116       (116 * 2 < 400: factorized)
    #   layer1.bias 24 + head.scale 1 dense, empty 0  -> 261 values = 1044 bytes
    # dense fp32 baseline: 384 + 96 + 400 + 24 + 1 = 905 values = 3620 bytes.
    for steps in ranks:
        for s in steps["rank2"][1:]:
            assert s["bytes"]["bytes_sent_P"] == (1044, 1044) and s["bytes"]["dense_bytes"] == 3620
            assert not s["bytes"]["dense_step"]
