"""Two gloo workers (real torch.distributed over 127.0.0.1) run GradientExchange.

Every case of scripts/exchange_worker.py (dense, top-k layerwise and global with fp16,
warm-up, shared random-k fp32 and bf16, independent random-k; top-k, shared and
independent random-k with a density per member) is checked against an average
recomputed from the saved payloads, member by member, and against each member's exact
byte count (scripts/exchange_check.py).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.integration.conftest import run_gloo_ranks

SCRIPTS = Path(__file__).parent / "scripts"
WORLD = 2


def _load_check():
    spec = importlib.util.spec_from_file_location("exchange_check", SCRIPTS / "exchange_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_gloo_two_workers_match_reference(tmp_path):
    run_gloo_ranks(SCRIPTS / "exchange_worker.py", tmp_path, world=WORLD, args=("--backend", "torch"))

    cases = _load_check().check_all(tmp_path, WORLD)
    assert {"dense", "topk", "randomk_shared", "randomk_independent", "topk_member_density",
            "randomk_shared_member_density", "randomk_independent_member_density"} <= set(cases)
