"""`ray job submit ... -- python -m launch run SPEC` against a Ray head this test starts
on loopback, as `make quickstart` does, and stops again; nothing of the head or the job
listens beyond the machine."""
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launch.quickstart import loopback_head_env
from tests.integration.conftest import REPO, free_port, launch_env, run_dir_of
from tests.listeners import is_loopback, run_watching_listeners

RAY = str(Path(sys.executable).with_name("ray"))


def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@pytest.fixture
def ray_head(tmp_path):
    """A Ray head in the foreground (`--block`, so its daemons and the jobs' processes are its
    descendants): terminating it stops its daemons. Yields (dashboard URL, head pid)."""
    gcs, dashboard = free_port(), free_port()
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", f"--ray-client-server-port={free_port()}",
         f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
         "--disable-usage-stats"],
        # No drain on SIGTERM (30 s by default, for Serve replicas): the head stops at once.
        env={**loopback_head_env(launch_env()), "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0"},
        stdout=(tmp_path / "head.log").open("w"), stderr=subprocess.STDOUT)
    try:
        wait_for_port(dashboard, timeout=120)
        yield f"http://127.0.0.1:{dashboard}", head.pid
    finally:
        head.terminate()
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            head.kill()


def test_ray_job_submit_round_trip(ray_head, tmp_path):
    dashboard, head = ray_head
    storage = tmp_path / "runs"
    done, seen = run_watching_listeners(
        [RAY, "job", "submit", "--address", dashboard, "--working-dir", ".", "--",
         "python", "-m", "launch", "run", "configs/tiny.yaml", "--set", f"run.storage={storage}"],
        # The job CLI reads RAY_ADDRESS before --address: point both at this test's head.
        also=(head,), cwd=REPO, env={**launch_env(), "RAY_ADDRESS": dashboard}, timeout=400)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "succeeded" in output
    run_dir = run_dir_of(output)
    assert run_dir.parent == storage  # outside the job's temporary working directory
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 20
    assert "[step 20/20]" in output  # progress lines reach `ray job logs`
    assert sorted(entry for entry in seen if not is_loopback(entry[0])) == []
    assert any("RayTrainWorker" in command for *_, command in seen), seen  # the job's workers were seen


def test_launch_run_joins_the_loopback_head_started_on_this_machine(ray_head, tmp_path):
    """Without RAY_ADDRESS, `launch run` joins the head `ray start` left on this machine (a
    loopback head, as make quickstart starts one) instead of starting a Ray of its own."""
    env = {key: value for key, value in launch_env().items() if key != "RAY_ADDRESS"}
    done, seen = run_watching_listeners(
        [sys.executable, "-m", "launch", "run", "configs/tiny.yaml", "--set", f"run.storage={tmp_path / 'runs'}"],
        cwd=REPO, env=env, timeout=400)  # only the run's own process tree is watched
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "does not answer" not in output and "[step 20/20]" in output
    own_daemons = [command for *_, command in seen if "gcs_server" in command or "raylet" in command]
    assert own_daemons == [], own_daemons  # the GCS and raylet it used are the head's
