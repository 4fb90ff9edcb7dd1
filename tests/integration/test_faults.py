"""Faults on a real one-group Ray Train job (configs/tiny.yaml): a corrupt newest
checkpoint is named and skipped for the one before, and a failure that repeats at the same
step stops the job with that error even with run.max_failures: -1 (one job for both); a
full disk stops the job cleanly (root only: the run directory is on a small tmpfs)."""
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from launch.runs.files import METRICS, SUMMARY, run_dir_in
from tests.integration.conftest import REPO, launch_env, run_dir_of
from tests.integration.test_worker_failure import train_workers
from tests.small_disk import small_disk
from trainers.checkpoint import incomplete


def registered_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(step, folder) of the checkpoints Ray Train has registered so far, oldest first."""
    try:
        snapshot = json.loads((run_dir / "checkpoints" / "checkpoint_manager_snapshot.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return []
    return [(result["metrics"]["step"], run_dir / "checkpoints" / result["checkpoint_dir_name"])
            for result in snapshot.get("checkpoint_results", [])]


def corrupt(path: Path) -> None:
    """Same size, other bytes in the middle (idempotent: corrupting twice stays corrupt)."""
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 8] = b"CORRUPT!"
    path.write_bytes(bytes(data))


@pytest.fixture
def start(tmp_path):
    """start(storage, *overrides) -> (driver, its log): `launch run configs/tiny.yaml` in the
    background, ended (SIGTERM: Ray shuts its local instance down) if a test leaves it running."""
    drivers = []

    def run(storage: Path, *overrides: str) -> tuple[subprocess.Popen, Path]:
        args = [sys.executable, "-m", "launch", "run", "configs/tiny.yaml", "--set", f"run.storage={storage}",
                "--set", "train.log_interval=10", "--set", "train.eval_interval=1000"]
        for item in overrides:
            args += ["--set", item]
        log = tmp_path / "driver.log"
        with log.open("w") as out:
            drivers.append(subprocess.Popen(args, cwd=REPO, env=launch_env(), stdout=out, stderr=subprocess.STDOUT,
                                            text=True))
        return drivers[-1], log

    yield run
    for driver in drivers:
        if driver.poll() is None:
            driver.terminate()
            driver.wait(timeout=60)


def wait_for(driver: subprocess.Popen, log: Path, ready, timeout: float = 480):
    """Poll until `ready(run_dir)` returns something; that, with the run directory."""
    deadline = time.monotonic() + timeout
    while driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
        run_dir = run_dir_in(log.read_text())
        if run_dir is not None and (found := ready(run_dir)):
            return found, run_dir
    raise AssertionError(f"never ready; the job's output:\n{log.read_text()[-4000:]}")


def kill_a_worker(driver: subprocess.Popen) -> None:
    train_workers(psutil.Process(driver.pid))[-1].kill()


def test_a_corrupt_checkpoint_falls_back_and_a_repeating_failure_stops(tmp_path, start):
    """One job, run.max_failures: -1. First the newest checkpoint is corrupt: it is named and
    skipped, and the job resumes from the one before. Then every checkpoint Ray keeps is
    corrupt: every restart fails restoring (at step 0) the same way, and the job stops at
    the third time with that error instead of restarting without end."""
    driver, log = start(tmp_path, "train.steps=1200", "run.checkpoint_interval=300", "run.keep_checkpoints=2",
                        "run.max_failures=-1")
    checkpoints, run_dir = wait_for(driver, log, lambda d: (c := registered_checkpoints(d)) and len(c) >= 2 and c)
    (older, _), (newest, folder) = checkpoints[-2:]
    corrupt(folder / "model.pt")
    kill_a_worker(driver)
    wait_for(driver, log, lambda d: "resuming from the checkpoint at step" in log.read_text())
    output = log.read_text()
    assert f"skipping the checkpoint {folder}: {folder / 'model.pt'}: corrupt" in output
    assert re.findall(r"resuming from the checkpoint at step (\d+)", output) == [str(older)], output[-4000:]
    assert newest == older + 300

    kept = registered_checkpoints(run_dir)
    for _, folder in kept:
        corrupt(folder / "model.pt")
    kill_a_worker(driver)
    driver.wait(timeout=480)
    output = log.read_text()
    assert driver.returncode == 1, output[-4000:]
    summary = json.loads((run_dir / SUMMARY).read_text())
    assert summary["status"] == "failed", summary
    assert re.match(r"rank [01] at step 0: CheckpointError: no intact checkpoint to restore from: ", summary["error"])
    assert all(f"{folder / 'model.pt'}: corrupt" in summary["error"] for _, folder in kept), summary["error"]
    assert summary["error"].endswith("(the same failure 3 times: restarting from the checkpoint does not cure it)")
    assert "Traceback" not in output.split("== failed")[-1]


def test_a_full_disk_stops_the_job_cleanly(tmp_path, start):
    with small_disk(tmp_path, "64m") as disk:
        driver, log = start(disk.path, "train.steps=2000", "run.checkpoint_interval=50",
                            "run.max_failures=-1")
        wait_for(driver, log, registered_checkpoints)
        disk.fill()
        driver.wait(timeout=480)
        output = log.read_text()
        run_dir = run_dir_of(output)
        assert driver.returncode == 1, output[-4000:]
        assert "No space left on device" in output.split("== failed")[-1], output[-4000:]
        assert "Traceback" not in output.split("== failed")[-1], output[-4000:]
        # Nothing torn, nothing temporary, every checkpoint Ray registered complete.
        lines = (run_dir / METRICS).read_text().splitlines()
        assert lines and all(json.loads(line)["step"] % 10 == 0 for line in lines)
        assert not [path for path in run_dir.rglob("*") if ".tmp-" in path.name]
        assert all(incomplete(folder) is None for _, folder in registered_checkpoints(run_dir))
        disk.free()
        if (run_dir / SUMMARY).exists():  # it fit: it says why the job failed
            summary = json.loads((run_dir / SUMMARY).read_text())
            assert summary["status"] == "failed" and "No space left on device" in summary["error"]
