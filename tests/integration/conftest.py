"""Helpers for tests that start real Ray clusters, DeepSpeed workers and mpiexec."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from launch.quickstart import ensure_auth_token
from launch.runs.files import METRICS, read_jsonl, run_dir_in
from pbt.events import read_events

REPO = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


def launch_env() -> dict:
    env = dict(os.environ)
    # A test's job must start its own local Ray, never join a cluster left on the machine.
    env["RAY_ADDRESS"] = "local"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # Ray 2.60 clusters require a token (~/.ray/auth_token); clients must say so.
    env["RAY_AUTH_MODE"] = "token"
    return env


def run_dir_of(output: str) -> Path:
    run_dir = run_dir_in(output)
    assert run_dir is not None, output[-3000:]
    return run_dir


def read_rows(run_dir: Path) -> list[dict]:
    return read_jsonl(run_dir / METRICS)


def train_two_members_under_pbt(spec: str, storage: Path, *overrides: str) -> Path:
    """Run a 6-step, 2-worker mpiexec job of 2 members under PBT with top-k compression
    (configs/tiny_listops.yaml, configs/tiny_pathfinder.yaml) and check what every such job
    must show: completed, both members logged, top-k did the exchange, one exploit at step 3
    (none at the last step). Returns the run directory."""
    mpiexec = str(Path(sys.executable).with_name("mpiexec"))
    args = [mpiexec, "-n", "2", sys.executable, "-m", "launch", "run", spec, "--set", f"run.storage={storage}"]
    for item in overrides:
        args += ["--set", item]
    done = subprocess.run(args, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_dir = run_dir_of(done.stdout)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 6
    rows = read_rows(run_dir)
    assert {row["member"] for row in rows} == {0, 1}
    assert all(0 < row["bytes_sent"] < row["dense_bytes"] for row in rows)  # top-k did the exchange
    assert all(0.0 <= row["val_accuracy"] <= 1.0 for row in rows if "val_accuracy" in row)
    events = read_events((run_dir / "pbt_events.jsonl").read_text().splitlines())
    assert [e.step for e in events] == [3]  # one round (none at the last step): the worse member copied
    return run_dir


@pytest.fixture(scope="session", autouse=True)
def ray_auth_token():
    ensure_auth_token(launch_env())


@pytest.fixture
def run_launch(tmp_path):
    """Run `python -m launch run SPEC --set ...` with storage under tmp_path."""

    def run(spec: str, *overrides: str, timeout: int = 300) -> tuple[subprocess.CompletedProcess, Path | None]:
        args = [sys.executable, "-m", "launch", "run", spec, "--set", f"run.storage={tmp_path}"]
        for item in overrides:
            args += ["--set", item]
        done = subprocess.run(args, cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=timeout)
        output = done.stdout + done.stderr
        return done, run_dir_in(output)

    return run


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_gloo_ranks(script: Path, outdir: Path, *, world: int, args: tuple[str, ...] = (), timeout: float = 90) -> None:
    """Run `script --rank r --world-size W --port P --outdir D [args]` for every rank on
    loopback gloo; assert every rank exits 0 (its output in the message if not)."""
    port = free_port()
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, str(script), *args, "--rank", str(r), "--world-size", str(world),
                               "--port", str(port), "--outdir", str(outdir)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(world)]
    try:
        outputs = [p.communicate(timeout=timeout)[0] for p in procs]
    finally:
        for p in procs:  # a crashed peer would leave the other waiting in a collective
            if p.poll() is None:
                p.kill()
    for r, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0, f"rank {r} failed:\n{out}"


def gloo_rank_results(script: Path, outdir: Path, *, world: int, timeout: float = 90) -> list:
    """`run_gloo_ranks`, then what each rank saved as `outdir/rank{r}.pt`, in rank order."""
    run_gloo_ranks(script, outdir, world=world, timeout=timeout)
    return [torch.load(outdir / f"rank{r}.pt", weights_only=True) for r in range(world)]
