"""Kill a DeepSpeed worker mid-run: Ray Train restarts the group from the last
checkpoint and the job completes with its step count intact."""
import json
import re
import subprocess
import sys
import time

import psutil

from launch.runs.files import run_dir_in
from tests.integration.conftest import REPO, launch_env, read_rows, run_dir_of

STEPS, CHECKPOINT_EVERY, LOG_EVERY = 400, 50, 5


def train_workers(root: psutil.Process) -> list[psutil.Process]:
    found = []
    for proc in root.children(recursive=True):
        try:
            if "RayTrainWorker" in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def latest_checkpoint_step(run_dir, folder: str = "checkpoints") -> int:
    """The step of the newest checkpoint Ray Train has registered in run_dir/folder (0 if none yet)."""
    snapshot = run_dir / folder / "checkpoint_manager_snapshot.json"
    try:
        latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
    except (FileNotFoundError, json.JSONDecodeError):
        return 0
    return latest["metrics"]["step"] if latest else 0


def test_killed_worker_resumes_from_checkpoint(tmp_path):
    args = [sys.executable, "-m", "launch", "run", "configs/tiny.yaml", "--set", f"run.storage={tmp_path}",
            "--set", f"train.steps={STEPS}", "--set", f"run.checkpoint_interval={CHECKPOINT_EVERY}",
            "--set", f"train.log_interval={LOG_EVERY}", "--set", "train.eval_interval=100",
            "--set", "run.max_failures=1"]
    log = tmp_path / "driver.log"
    with log.open("w") as out:
        driver = subprocess.Popen(args, cwd=REPO, env=launch_env(), stdout=out, stderr=subprocess.STDOUT, text=True)
        killed_at = None
        deadline = time.monotonic() + 240
        while killed_at is None and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            if run_dir_in(log.read_text()) is None:
                continue
            run_dir = run_dir_of(log.read_text())
            if latest_checkpoint_step(run_dir) >= CHECKPOINT_EVERY:
                train_workers(psutil.Process(driver.pid))[-1].kill()
                killed_at = latest_checkpoint_step(run_dir)
        assert killed_at is not None and killed_at < STEPS, "the run ended before a worker could be killed"
        driver.wait(timeout=300)
    output = log.read_text()
    assert driver.returncode == 0, output[-4000:]

    resumed = [int(s) for s in re.findall(r"resuming from the checkpoint at step (\d+)", output)]
    assert resumed and resumed[0] >= killed_at and resumed[0] % CHECKPOINT_EVERY == 0

    run_dir = run_dir_of(output)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == STEPS
    # Rows past the checkpoint were dropped and logged again: each step exactly once.
    assert [row["step"] for row in read_rows(run_dir)] == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
