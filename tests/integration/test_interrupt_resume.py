"""A stop signal on a job's driver, then `launch resume`: the interrupted run ends with the
signal's exit status, a line saying how to resume, summary.json `interrupted` and no process
left behind; the resumed run's metrics equal an uninterrupted run's, timing aside. The
checkpoint interval is not a multiple of the log interval, so the resumed run's first row
averages steps from before and after the checkpoint."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from launch.runs.files import read_json, run_dir_in
from tests.integration.conftest import REPO, launch_env, read_rows, run_dir_of
from tests.integration.test_worker_failure import latest_checkpoint_step

MPIEXEC = str(Path(sys.executable).with_name("mpiexec"))
STEPS, CHECKPOINT_EVERY = 100, 30
SPEC = ["configs/tiny.yaml", "--set", f"train.steps={STEPS}", "--set", f"run.checkpoint_interval={CHECKPOINT_EVERY}",
        "--set", "train.log_interval=4", "--set", "train.eval_interval=50"]
MPI = ["--set", "distributed.launcher=mpi"]
TIMING = ("time_s", "tokens_per_s")


def strip(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def mpi_checkpoint_step(run_dir: Path) -> int:
    return read_json(run_dir / "checkpoints" / "latest.json").get("step", 0)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[dict]:
    """The reference rows (under mpiexec, the quicker start; the Ray run's rows are the same)."""
    storage = tmp_path_factory.mktemp("whole")
    done = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "launch", "run", *SPEC, *MPI,
                           "--set", f"run.storage={storage}"],
                          cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return read_rows(run_dir_of(done.stdout))


def interrupt(command: list[str], log: Path, checkpoint_step, sig: int, *,
              after: int = CHECKPOINT_EVERY) -> tuple[subprocess.Popen, Path]:
    """Start `command`, send `sig` to it once `checkpoint_step(run_dir)` reaches `after`, and
    wait for its end; asserts that every process it had started is gone soon after."""
    with log.open("w") as out:
        driver = subprocess.Popen(command, cwd=REPO, env=launch_env(), stdout=out, stderr=subprocess.STDOUT)
        deadline, run_dir = time.monotonic() + 240, None
        while driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            run_dir = run_dir_in(log.read_text())
            if run_dir is not None and checkpoint_step(run_dir) >= after:
                break
        assert driver.poll() is None, "the run ended before it could be interrupted:\n" + log.read_text()[-3000:]
        started = psutil.Process(driver.pid).children(recursive=True)
        driver.send_signal(sig)
        driver.wait(timeout=120)
    _, alive = psutil.wait_procs(started, timeout=30)
    assert not alive, f"left behind: {[(p.pid, p.name()) for p in alive]}"
    return driver, run_dir


def check_interrupted(driver: subprocess.Popen, run_dir: Path, output: str, sig: int, resume: str) -> None:
    assert driver.returncode == 128 + sig, output[-4000:]
    assert f"resume with: {resume}python -m launch resume {run_dir}" in output
    assert "Traceback" not in output, output[-4000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and CHECKPOINT_EVERY <= summary["steps"] < STEPS


def check_resumed(done: subprocess.CompletedProcess, run_dir: Path, uninterrupted: list[dict]) -> None:
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "resuming from the checkpoint at step" in output
    assert run_dir_of(done.stdout) == run_dir
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert strip(read_rows(run_dir)) == strip(uninterrupted)


def test_sigint_on_a_ray_train_job_then_resume(tmp_path, uninterrupted):
    driver, run_dir = interrupt([sys.executable, "-m", "launch", "run", *SPEC, "--set", f"run.storage={tmp_path}"],
                                tmp_path / "driver.log", latest_checkpoint_step, signal.SIGINT)
    check_interrupted(driver, run_dir, (tmp_path / "driver.log").read_text(), signal.SIGINT, "")
    done = subprocess.run([sys.executable, "-m", "launch", "resume", str(run_dir)], cwd=REPO, env=launch_env(),
                          capture_output=True, text=True, timeout=300)
    check_resumed(done, run_dir, uninterrupted)


def test_sigterm_on_an_mpiexec_job_then_resume(tmp_path, uninterrupted):
    driver, run_dir = interrupt([MPIEXEC, "-n", "2", sys.executable, "-m", "launch", "run", *SPEC, *MPI,
                                 "--set", f"run.storage={tmp_path}"],
                                tmp_path / "driver.log", mpi_checkpoint_step, signal.SIGTERM)
    check_interrupted(driver, run_dir, (tmp_path / "driver.log").read_text(), signal.SIGTERM, "mpiexec -n 2 ")
    done = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "launch", "resume", str(run_dir)], cwd=REPO,
                          env=launch_env(), capture_output=True, text=True, timeout=300)
    check_resumed(done, run_dir, uninterrupted)
