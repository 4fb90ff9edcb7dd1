"""`python -m launch run` with two real DeepSpeed workers on an embedded Ray instance."""
import json
import re

import yaml

from tests.integration.conftest import read_rows


def test_two_worker_run_writes_a_complete_run_directory(run_launch):
    done, run_dir = run_launch("configs/tiny.yaml")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert run_dir.is_absolute()
    for name in ("spec.yaml", "ds_config.json", "metrics.jsonl", "summary.json", "report.md", "val_loss.png"):
        assert (run_dir / name).is_file(), name

    spec = yaml.safe_load((run_dir / "spec.yaml").read_text())
    assert spec["train"]["steps"] == 20 and spec["model"]["attention"]["kind"] == "softmax"
    ds_config = json.loads((run_dir / "ds_config.json").read_text())
    assert ds_config["train_batch_size"] == 4 * 1 * 2

    rows = read_rows(run_dir)
    assert [row["step"] for row in rows] == [5, 10, 15, 20]
    for row in rows:
        assert {"step", "member", "loss", "lr", "tokens", "bytes_sent", "dense_bytes", "time_s"} <= row.keys()
    assert [row["step"] for row in rows if "val_loss" in row] == [10, 20]
    assert rows[-1]["tokens"] == 20 * 4 * 2 * 64

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 20
    assert summary["final_val_loss"] == rows[-1]["val_loss"]
    assert summary["final_val_loss"] < rows[0]["loss"]  # it learned something in 20 steps
    assert summary["unigram_baseline"] > 0 and summary["tokens_per_s"] > 0
    assert f"run directory: {run_dir}" in done.stdout  # printed at the start and at the end
    assert "[step 20/20]" in done.stdout + done.stderr
    # Quiet and honest: no error-looking line from a run that succeeded, no checkpoint chatter.
    output = done.stdout + done.stderr
    assert not re.search(r"\[[0-9-]+ [0-9:,]+ E \d+ \d+\]", output), output[-3000:]
    assert "Checkpoint successfully created" not in output and "Reporting training result" not in output


def test_more_workers_than_cpus_is_refused_before_anything_is_written(run_launch, tmp_path):
    done, run_dir = run_launch("configs/tiny.yaml", "distributed.num_workers=64")
    assert done.returncode == 2
    assert "distributed.num_workers: 64 workers × 1 CPU = 64 CPU, but the Ray cluster has" in done.stderr
    assert "Traceback" not in done.stderr
    assert run_dir is None and not any(tmp_path.iterdir())
