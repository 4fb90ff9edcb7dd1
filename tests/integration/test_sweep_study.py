"""A tiny compression sweep end to end: `python -m launch sweep` expands the grid, Ray Tune
runs each trial (a job under mpiexec), and the study directory gets results.csv, report.md
and the plots."""
import csv
import subprocess
import sys
from pathlib import Path

import yaml

from tests.integration.conftest import REPO, launch_env

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = ("val_loss_vs_step.png", "val_loss_vs_mb.png", "final_loss_vs_density.png", "step_time.png",
         "projection.png")


def test_tiny_sweep_writes_results_and_the_study_report(tmp_path):
    spec = yaml.safe_load((REPO / "configs" / "tiny.yaml").read_text())
    spec["distributed"] = {"num_workers": 1}
    spec["train"].update(steps=20, log_interval=5, eval_interval=10)
    spec["run"] = {"storage": str(tmp_path), "checkpoint_interval": 20}
    spec["sweep"] = {"compression.method": ["none", "topk"], "compression.density": [0.1]}
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))

    done = subprocess.run([sys.executable, "-m", "launch", "sweep", str(path)], cwd=REPO, env=launch_env(),
                          capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    study = Path(next(line for line in done.stdout.splitlines()
                      if line.strip().startswith("study directory: ")).split(": ", 1)[1].strip())
    assert study.parent == tmp_path and study.name.startswith("tiny-sweep-")

    with open(study / "results.csv", newline="") as f:
        rows = {row["trial"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"none", "topk-d0.1"}
    for row in rows.values():
        assert row["status"] == "completed" and row["workers"] == "1" and row["steps"] == "20"
        assert float(row["final_val_loss"]) < 6.0 and float(row["step_time_s"]) > 0
        assert (Path(row["run_dir"]) / "metrics.jsonl").exists() and Path(row["run_dir"]).parent == study / "runs"
    dense, topk = rows["none"], rows["topk-d0.1"]
    assert dense["density"] == "1.0" and int(dense["payload_bytes_per_step"]) == int(dense["dense_bytes_per_step"])
    # top-k 10% with fp32 values and int32 indices: about 20% of the dense bytes.
    ratio = int(topk["payload_bytes_per_step"]) / int(topk["dense_bytes_per_step"])
    assert 0.15 < ratio < 0.25, ratio
    assert int(topk["bytes_sent_per_worker"]) == 20 * int(topk["payload_bytes_per_step"])

    for name in PLOTS:
        assert (study / name).read_bytes()[:8] == PNG_MAGIC, name
    report = (study / "report.md").read_text()
    assert all(f"]({name})" in report for name in PLOTS)
    assert "| none | all-reduce |" in report and "| topk-d0.1 | all-gather |" in report
    assert "1-worker run" in report and "Who wins where" in report
    assert (study / "tune").is_dir() and (study / "trials" / "01-none.yaml").exists()
    assert "launcher: mpi" in (study / "trials" / "02-topk-d0.1.yaml").read_text()
