"""Two gloo workers (real torch.distributed over 127.0.0.1) run GradientExchange.

Every case of scripts/exchange_worker.py (dense, top-k layerwise and global with fp16,
warm-up, shared random-k fp32 and bf16, independent random-k; top-k, shared and
independent random-k with a density per member) is checked against an average
recomputed from the saved payloads, member by member, and against each member's exact
byte count (scripts/exchange_check.py).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parent / "scripts"
REPO = Path(__file__).resolve().parents[2]
WORLD = 2


def _load_check():
    spec = importlib.util.spec_from_file_location("exchange_check", SCRIPTS / "exchange_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.integration
@pytest.mark.timeout(120)
def test_gloo_two_workers_match_reference(tmp_path):
    port = _free_port()
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, str(SCRIPTS / "exchange_worker.py"), "--backend", "torch",
             "--rank", str(r), "--world-size", str(WORLD), "--port", str(port), "--outdir", str(tmp_path)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for r in range(WORLD)
    ]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=90)[0])
    finally:
        for p in procs:  # a crashed peer would leave the other waiting in a collective
            if p.poll() is None:
                p.kill()
    for r, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"rank {r} failed:\n{out}"

    cases = _load_check().check_all(tmp_path, WORLD)
    assert {"dense", "topk", "randomk_shared", "randomk_independent", "topk_member_density",
            "randomk_shared_member_density", "randomk_independent_member_density"} <= set(cases)
