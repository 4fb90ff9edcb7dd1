"""The worker loop with `compression.overlap: true` trains exactly as with false: two
DeepSpeed workers on loopback gloo (scripts/overlap_training_rank.py), two members with
their own top-k densities (PBT's density mutation), fp16 values on the wire, gradient
accumulation over 2 micro-steps: after every step the weights, optimizer state and
error-feedback residuals are bit-identical, and so are the losses and bytes."""
from pathlib import Path

import pytest
import torch

from tests.integration.conftest import run_gloo_ranks

SCRIPT = Path(__file__).parent / "scripts" / "overlap_training_rank.py"
# seed 1: the two members draw densities 0.05 and 0.2.
OVERRIDES = ("seed=1", "population.size=2", "train.grad_accum_steps=2", "compression.method=topk",
             "compression.value_dtype=fp16",
             "population.pbt={perturbation_interval: 100, hyperparam_mutations: {density: [0.05, 0.2]}}")


@pytest.mark.timeout(300)
def test_overlapped_training_equals_the_exchange_after_backward(tmp_path):
    run_gloo_ranks(SCRIPT, tmp_path, world=2, args=tuple(a for item in OVERRIDES for a in ("--set", item)),
                   timeout=240)
    for rank in (0, 1):
        steps = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert len(steps) == 3
        for step in steps:
            assert step["overlapped"] == (True, True)  # false: after backward; true: during it
            assert step["weights_equal"] and step["residuals_equal"] and step["optimizer_equal"]
            assert torch.equal(*step["loss"]) and step["bytes"][0] == step["bytes"][1]
            low, high = step["bytes"][0]["ratio_P"]
            assert 0 < low < high < 0.5  # top-k did the exchange, each member at its own density
