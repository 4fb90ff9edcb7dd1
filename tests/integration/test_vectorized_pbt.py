"""Vectorized PBT with real DeepSpeed workers: exploits keep the replicas identical, each
member sends at its own (mutated) density, and a run killed mid-way resumes to exactly
the metrics of an uninterrupted run."""
import json
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from launch.spec.schema import load_spec
from pbt.events import read_events, replay
from trainers.export import load_exported
from trainers.model import PopulationTransformer
from launch.runs.files import run_dir_in
from tests.integration.conftest import REPO, launch_env, read_rows, run_dir_of
from tests.integration.test_worker_failure import latest_checkpoint_step, train_workers

MPIEXEC = str(Path(sys.executable).with_name("mpiexec"))


@pytest.fixture(scope="module")
def mpi_pbt_run(tmp_path_factory):
    """configs/tiny_pbt.yaml under mpiexec: 4 members, 2 workers, PBT, top-k."""
    storage = tmp_path_factory.mktemp("mpi-pbt")
    done = subprocess.run([MPIEXEC, "-n", "2", sys.executable, "-m", "launch", "run", "configs/tiny_pbt.yaml",
                           "--set", "distributed.launcher=mpi", "--set", f"run.storage={storage}"],
                          cwd=REPO, env=launch_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return run_dir_of(done.stdout)


def test_exploits_keep_both_workers_identical(mpi_pbt_run):
    run_dir = mpi_pbt_run
    events = read_events((run_dir / "pbt_events.jsonl").read_text().splitlines())
    assert events and {e.step for e in events} <= {10, 20, 30, 40, 50}  # none at the last step (60)
    assert all(e.target != e.source for e in events)

    # Both workers hold the same weights after every exploit, member by member.
    folder = run_dir / "checkpoints" / json.loads((run_dir / "checkpoints" / "latest.json").read_text())["folder"]
    digests = [torch.load(folder / f"worker_rank{r}.pt", weights_only=True)["replica_digest"] for r in (0, 1)]
    assert digests[0].shape == (4,) and torch.equal(digests[0], digests[1])

    # The event log replays to the hyperparameters each member had in metrics.jsonl. A row
    # of step s shows those that trained step s; an exploit at step s acts after it.
    summary = json.loads((run_dir / "summary.json").read_text())
    history = replay(events, summary["initial_hyperparams"])
    for row in read_rows(run_dir):
        assert history[row["member"]].at(row["step"] - 1) == row["hyperparams"], row["step"]
    assert len({tuple(sorted(row["hyperparams"].items())) for row in read_rows(run_dir)}) > 4  # they evolved

    # Each member sent at its own density: a row's bytes are a function of the density
    # that trained its step (members, steps and exploits alike), growing with it.
    bytes_at = {}
    for row in read_rows(run_dir):
        bytes_at.setdefault(row["hyperparams"]["density"], set()).add(row["bytes_sent"])
    assert len(bytes_at) >= 2 and all(len(sent) == 1 for sent in bytes_at.values()), bytes_at
    by_density = [sent.pop() for _, sent in sorted(bytes_at.items())]
    assert by_density == sorted(by_density) and len(set(by_density)) == len(by_density)


def launch_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launch", *args], cwd=REPO, env=launch_env(), capture_output=True,
                          text=True, timeout=300)


def test_the_best_member_exported_and_sampled(mpi_pbt_run, tmp_path):
    run_dir = mpi_pbt_run
    summary = json.loads((run_dir / "summary.json").read_text())
    best = min(summary["members"], key=lambda m: summary["members"][m]["final_val_loss"])
    done = launch_cli("export", str(run_dir), "--out", str(tmp_path / "best"))
    assert done.returncode == 0, done.stderr[-3000:]
    config = json.loads((tmp_path / "best" / "config.json").read_text())
    assert config["source"]["member"] == int(best) and config["source"]["step"] == 60

    # Its logits are that member's in the population model of the last checkpoint; the
    # loader needs PyTorch alone (neither Ray nor DeepSpeed).
    folder = run_dir / "checkpoints" / json.loads((run_dir / "checkpoints" / "latest.json").read_text())["folder"]
    state = torch.load(folder / "model.pt", weights_only=True)
    spec = load_spec(str(run_dir / "spec.yaml"))
    population = PopulationTransformer(spec.model, members=4, vocab_size=256, max_seq_len=spec.task.seq_len,
                                       causal=True).eval()
    population.load_state_dict(state["model"])
    exported = load_exported(tmp_path / "best")
    alone = subprocess.run([sys.executable, "-c", "import sys; from trainers.export import load_exported; "
                            f"load_exported({str(tmp_path / 'best')!r}); "
                            "print(sorted(m for m in ('ray', 'deepspeed') if m in sys.modules))"],
                           cwd=REPO, capture_output=True, text=True, check=True)
    assert alone.stdout.strip() == "[]", alone.stdout + alone.stderr
    ids_BT = torch.randint(0, 256, (2, spec.task.seq_len), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(exported(ids_BT), population(ids_BT.expand(4, -1, -1))[int(best)])

    sampled = launch_cli("sample", str(run_dir), "--member", "2", "--prompt", "def ", "--tokens", "40", "--seed", "1")
    assert sampled.returncode == 0 and len(sampled.stdout.encode()) >= 30, sampled.stderr[-2000:]
    assert launch_cli("sample", str(run_dir), "--member", "2", "--prompt", "def ", "--tokens", "40",
                      "--seed", "1").stdout == sampled.stdout  # seeded
    missing = launch_cli("export", str(run_dir), "--member", "9")
    assert missing.returncode == 2 and "--member: member 9 is not in this run" in missing.stderr


def ray_run(tmp_path, *overrides, kill_after_checkpoint=False):
    tmp_path.mkdir()
    args = [sys.executable, "-m", "launch", "run", "configs/tiny_pbt.yaml", "--set", f"run.storage={tmp_path}",
            "--set", "train.steps=80"]
    for item in overrides:
        args += ["--set", item]
    log = tmp_path / "driver.log"
    with log.open("w") as out:
        driver = subprocess.Popen(args, cwd=REPO, env=launch_env(), stdout=out, stderr=subprocess.STDOUT)
        while kill_after_checkpoint and driver.poll() is None:
            time.sleep(0.2)
            if run_dir_in(log.read_text()) and latest_checkpoint_step(run_dir_of(log.read_text())) >= 20:
                train_workers(psutil.Process(driver.pid))[0].kill()
                break
        driver.wait(timeout=400)
    assert driver.returncode == 0, log.read_text()[-4000:]
    return run_dir_of(log.read_text()), log.read_text()


def test_resume_after_a_killed_worker_reproduces_the_uninterrupted_run(tmp_path):
    whole, _ = ray_run(tmp_path / "whole")
    resumed, output = ray_run(tmp_path / "resumed", kill_after_checkpoint=True)
    assert "resuming from the checkpoint at step" in output
    timing = {"time_s", "tokens_per_s"}
    strip = lambda rows: [{k: v for k, v in row.items() if k not in timing} for row in rows]  # noqa: E731
    assert strip(read_rows(resumed)) == strip(read_rows(whole))
    assert (resumed / "pbt_events.jsonl").read_text() == (whole / "pbt_events.jsonl").read_text()
