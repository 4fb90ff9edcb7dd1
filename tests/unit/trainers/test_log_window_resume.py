"""A resume from a checkpoint between two logged steps reproduces the next row: the logging
window (the steps a row's loss averages) is checkpointed with the rest. One worker in a
subprocess (DeepSpeed, gloo with one process; no Ray, no mpiexec), the mpiexec launcher's
checkpoint folders and metric log (benchmarks/device_check_training.py)."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = """
import json, sys
sys.path.insert(0, "benchmarks")
from device_check_training import checkpoint_folder, run_job
from launch.spec.schema import load_spec

storage = sys.argv[1]
spec = load_spec("configs/tiny.yaml", ["distributed.num_workers=1", "distributed.resources_per_worker={CPU: 1}",
                                       "train.steps=12", "train.log_interval=4", "train.eval_interval=12",
                                       "run.checkpoint_interval=6", f"run.storage={storage}"])
full = run_job(spec)
resumed = run_job(spec, resume_from=checkpoint_folder(spec.storage_dir(), 6))
print(json.dumps({"full": full, "resumed": resumed}))
"""
TIMING = ("time_s", "tokens_per_s")


def test_resume_between_logged_steps_reproduces_the_next_row(tmp_path):
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    strip = lambda rows: [{k: v for k, v in row.items() if k not in TIMING} for row in rows]  # noqa: E731
    full, resumed = strip(rows["full"]), strip(rows["resumed"])
    assert [row["step"] for row in full] == [4, 8, 12] and [row["step"] for row in resumed] == [8, 12]
    # Step 8's loss is the mean over steps 5-8, two of them before the checkpoint at 6.
    assert resumed == full[1:]
