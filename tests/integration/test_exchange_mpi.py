"""Two MPI ranks (`mpiexec -n 2`, mpich from the venv, mpi4py) run GradientExchange.

Same worker and reference checks as the gloo test, through MpiCommunicator.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).parent / "scripts"
REPO = Path(__file__).resolve().parents[2]
WORLD = 2
MPIEXEC = Path(sys.executable).parent / "mpiexec"


def _load_check():
    spec = importlib.util.spec_from_file_location("exchange_check", SCRIPTS / "exchange_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.integration
@pytest.mark.timeout(120)
@pytest.mark.skipif(not MPIEXEC.exists(), reason=f"no mpiexec next to {sys.executable}")
def test_mpi_two_ranks_match_reference(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [str(MPIEXEC), "-n", str(WORLD), sys.executable, str(SCRIPTS / "exchange_worker.py"),
           "--backend", "mpi", "--outdir", str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, f"mpiexec failed:\n{proc.stdout}\n{proc.stderr}"

    cases = _load_check().check_all(tmp_path, WORLD)
    assert {"dense", "topk", "randomk_shared", "randomk_independent"} <= set(cases)
