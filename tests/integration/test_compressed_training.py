"""Compressed training end to end: DeepSpeed workers under mpiexec exchanging top-k
gradients over MPI, and what error feedback buys."""
import json
import subprocess
import sys
from pathlib import Path

import torch

from tests.integration.conftest import REPO, launch_env, read_rows, run_dir_of

MPIEXEC = str(Path(sys.executable).with_name("mpiexec"))


def mpi_run(tmp_path, spec, *overrides, timeout=600):
    args = [MPIEXEC, "-n", "2", sys.executable, "-m", "launch", "run", spec, "--set", f"run.storage={tmp_path}"]
    for item in overrides:
        args += ["--set", item]
    done = subprocess.run(args, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return run_dir_of(done.stdout)


def test_mpiexec_run_with_topk_over_mpi(tmp_path):
    run_dir = mpi_run(tmp_path, "configs/compression_mpi.yaml", "train.steps=40", "train.log_interval=10",
                      "train.eval_interval=20", "run.checkpoint_interval=20")
    spec = (run_dir / "spec.yaml").read_text()
    assert "launcher: mpi" in spec and "backend: mpi" in spec and "method: topk" in spec
    rows = read_rows(run_dir)
    assert [row["step"] for row in rows] == [10, 20, 30, 40]  # written once, by rank 0
    # top-k 1% with fp32 values and int32 indices: 8 bytes per sent entry of 4*N dense
    # bytes, k = max(1, round(0.01 n)) per tensor: about 2% (rounding moves it a little).
    ratio = rows[-1]["bytes_sent"] / rows[-1]["dense_bytes"]
    assert 0.019 <= ratio < 0.025
    assert rows[-1]["bytes_sent_total"] == 40 * rows[-1]["bytes_sent"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["compression_ratio"] > 40
    assert summary["final_val_loss"] < rows[0]["loss"]
    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    assert latest["step"] == 40 and (run_dir / "checkpoints" / latest["folder"] / "worker_rank1.pt").is_file()


# Plain SGD is the setting of "Sparsified SGD with Memory" (Stich et al. 2018). Measured on
# the dense baseline model (configs/baseline_dense.yaml), 2 workers, 300 steps, lr 0.5: dense 2.501, top-k 1% with error
# feedback 2.508, without 2.664 (nats/token). Asserted with margin.
SGD = ("train.optimizer=sgd", "train.momentum=0.0", "train.lr=0.5", "distributed.backend=torch")
EF_TOLERANCE = 0.05  # measured 0.007
NO_EF_GAP = 0.08  # measured 0.156 worse than with error feedback


def final_val_loss(run_dir) -> float:
    return json.loads((run_dir / "summary.json").read_text())["final_val_loss"]


def test_topk_with_error_feedback_tracks_dense_and_without_it_falls_behind(tmp_path):
    dense = final_val_loss(mpi_run(tmp_path, "configs/compression_mpi.yaml", *SGD, "compression.method=none"))
    with_ef = final_val_loss(mpi_run(tmp_path, "configs/compression_mpi.yaml", *SGD, "compression.method=topk",
                                     "compression.density=0.01", "compression.error_feedback=true"))
    without_ef = final_val_loss(mpi_run(tmp_path, "configs/compression_mpi.yaml", *SGD, "compression.method=topk",
                                        "compression.density=0.01", "compression.error_feedback=false"))
    assert dense < 2.7  # the dense baseline itself trained (unigram baseline: 3.20)
    assert abs(with_ef - dense) < EF_TOLERANCE, (dense, with_ef)
    assert without_ef > with_ef + NO_EF_GAP, (with_ef, without_ef)


def test_fp16_with_topk_keeps_replicas_and_loss_scales_identical(tmp_path):
    """train.precision=fp16 under mpiexec: autocast on the CPU, a loss scale per member,
    the overflow flags summed over workers, so both ranks hold the same weights and scales."""
    run_dir = mpi_run(tmp_path, "configs/tiny.yaml", "distributed.launcher=mpi", "train.precision=fp16",
                      "compression.method=topk", "population.size=2")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final_val_loss"] < read_rows(run_dir)[0]["loss"]
    latest = json.loads((run_dir / "checkpoints" / "latest.json").read_text())
    ranks = [torch.load(run_dir / "checkpoints" / latest["folder"] / f"worker_rank{rank}.pt", weights_only=True)
             for rank in (0, 1)]
    assert torch.equal(ranks[0]["replica_digest"], ranks[1]["replica_digest"])
    assert torch.equal(ranks[0]["loss_scaler"]["scale_P"], ranks[1]["loss_scaler"]["scale_P"])
    assert ranks[0]["loss_scaler"]["clean_steps_P"].tolist() == [20, 20]  # no overflow in 20 steps
