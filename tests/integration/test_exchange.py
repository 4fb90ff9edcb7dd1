"""Two workers run GradientExchange over each communicator: gloo (real torch.distributed
over 127.0.0.1) and MPI (`mpiexec -n 2`, mpich from the venv, mpi4py).

Every case of scripts/exchange_worker.py (dense, top-k layerwise and global with fp16,
warm-up, shared random-k fp32 and bf16, independent random-k; top-k, shared and
independent random-k with a density per member) is checked against an average
recomputed from the saved payloads, member by member, and against each member's exact
byte count (scripts/exchange_check.py).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, run_gloo_ranks

SCRIPTS = Path(__file__).parent / "scripts"
WORLD = 2
MPIEXEC = Path(sys.executable).parent / "mpiexec"
CASES = {"dense", "topk", "randomk_shared", "randomk_independent", "topk_member_density",
         "randomk_shared_member_density", "randomk_independent_member_density"}


def _load_check():
    spec = importlib.util.spec_from_file_location("exchange_check", SCRIPTS / "exchange_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_mpi_ranks(outdir: Path) -> None:
    if not MPIEXEC.exists():
        pytest.skip(f"no mpiexec next to {sys.executable}")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [str(MPIEXEC), "-n", str(WORLD), sys.executable, str(SCRIPTS / "exchange_worker.py"),
           "--backend", "mpi", "--outdir", str(outdir)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, f"mpiexec failed:\n{proc.stdout}\n{proc.stderr}"


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.parametrize("backend", ["torch", "mpi"])
def test_two_workers_match_reference(tmp_path, backend):
    if backend == "torch":
        run_gloo_ranks(SCRIPTS / "exchange_worker.py", tmp_path, world=WORLD, args=("--backend", "torch"))
    else:
        run_mpi_ranks(tmp_path)

    cases = _load_check().check_all(tmp_path, WORLD)
    assert CASES <= set(cases)
