"""Two vectorized groups (population.groups: 2) of two members, one Ray Train worker each:
members copy members of the other group through the coordinator and the object store,
exactly; a group killed mid-run resumes from its checkpoint to the uninterrupted run, and so
does the whole job interrupted and continued with `launch resume`."""
import json
import signal
import subprocess
import sys
import time

import psutil
import pytest
import torch

from pbt.events import read_events, replay
from launch.runs.files import run_dir_in
from tests.integration.conftest import REPO, launch_env, read_rows, run_dir_of
from tests.integration.test_interrupt_resume import interrupt
from tests.integration.test_worker_failure import latest_checkpoint_step, train_workers
from trainers.checkpoint import sealed_step

STEPS = 60  # rounds at 10, 20, ..., 50 (none at the last step); checkpoints at 20, 40, 60: a kill after 20
ROUND_CHECKPOINTED = 40  # a round and, right after it, a checkpoint: the copies as they were made
P = 2
TIMING = {"time_s", "tokens_per_s"}


def groups_args(storage) -> list[str]:
    return [sys.executable, "-m", "launch", "run", "configs/pbt_groups.yaml", "--set", f"run.storage={storage}",
            "--set", f"train.steps={STEPS}", "--set", "population.round_timeout_s=300"]


def rows_without_timing(run_dir) -> list[dict]:
    return sorted(({k: v for k, v in row.items() if k not in TIMING} for row in read_rows(run_dir)),
                  key=lambda row: (row["step"], row["member"]))


def event_lines(run_dir) -> list[str]:
    return sorted((run_dir / "pbt_events.jsonl").read_text().splitlines())


def both_groups_checkpointed(run_dir) -> int:
    return min(latest_checkpoint_step(run_dir, f"checkpoints_g{g}") for g in (0, 1))


def run_groups(tmp_path, *, kill_after_checkpoint=False):
    tmp_path.mkdir()
    args = groups_args(tmp_path)
    log = tmp_path / "driver.log"
    with log.open("w") as out:
        driver = subprocess.Popen(args, cwd=REPO, env=launch_env(), stdout=out, stderr=subprocess.STDOUT)
        while kill_after_checkpoint and driver.poll() is None:
            time.sleep(0.1)
            text = log.read_text()
            # Once both groups have a checkpoint, so that the killed one resumes from its own.
            if run_dir_in(text) and both_groups_checkpointed(run_dir_of(text)) >= 20:
                train_workers(psutil.Process(driver.pid))[0].kill()  # one group's only worker
                break
        driver.wait(timeout=400)
    assert driver.returncode == 0, log.read_text()[-4000:]
    return run_dir_of(log.read_text()), log.read_text()


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    return run_groups(tmp_path_factory.mktemp("groups") / "whole")


def state_at(run_dir, group, step):
    """(model.pt, worker_rank0.pt) of the group's checkpoint at `step` (taken right after
    that step's round)."""
    for folder in (run_dir / f"checkpoints_g{group}").glob("checkpoint_*/"):
        model = torch.load(folder / "model.pt", weights_only=True)
        if int(model["step"]) == step:
            return model, torch.load(folder / "worker_rank0.pt", weights_only=True)
    raise AssertionError(f"group {group} kept no checkpoint of step {step}")


def member_tensors(state, member):
    model, worker = state
    moments = [t[member] for s in worker["optimizer"]["state"].values() for t in s.values() if t.dim() > 0]
    # Dropout rates (`*.rate_P` buffers) are hyperparameters: explored, not copied.
    weights = [t[member] for name, t in model["model"].items() if t.dim() > 0 and not name.endswith("rate_P")]
    return (weights + moments
            + [t[member] for t in worker["exchange"].values()])


def test_members_copy_members_of_the_other_group_exactly(whole):
    run_dir, _ = whole
    events = read_events((run_dir / "pbt_events.jsonl").read_text().splitlines())
    # quantile_fraction 0.5: the worst 2 of the 4 members copy the best 2 at every round.
    assert [e.step for e in events] == sorted(e.step for e in events)
    assert {e.step for e in events} == set(range(10, STEPS, 10))  # none at the last step
    crossing = [e for e in events if e.target // P != e.source // P]
    assert crossing, [(e.step, e.target, e.source) for e in events]
    # The target's weights right after the copy are the source's at the round.
    assert all(e.digests["target"] == e.digests["source"] for e in events)

    # Right after a round each target holds its source's weights, optimizer moments and
    # residuals, bit for bit, whichever group either is in.
    states = [state_at(run_dir, g, ROUND_CHECKPOINTED) for g in (0, 1)]
    checked = [e for e in events if e.step == ROUND_CHECKPOINTED]
    assert checked
    for e in checked:
        target, source = member_tensors(states[e.target // P], e.target % P), member_tensors(
            states[e.source // P], e.source % P)
        assert len(target) == len(source) > 10 and all(torch.equal(a, b) for a, b in zip(target, source))

    # Global member ids everywhere; the events replay to every row's hyperparameters.
    rows = read_rows(run_dir)
    assert {row["member"] for row in rows} == {0, 1, 2, 3}
    assert all(row["group"] == row["member"] // P for row in rows)
    history = replay(events, json.loads((run_dir / "summary.json").read_text())["initial_hyperparams"])
    for row in rows:
        assert history[row["member"]].at(row["step"] - 1) == row["hyperparams"], (row["step"], row["member"])
    assert (run_dir / "report.md").exists() and (run_dir / "val_loss.png").exists()


def test_a_group_killed_mid_run_resumes_to_the_uninterrupted_run(whole, tmp_path):
    resumed, output = run_groups(tmp_path / "resumed", kill_after_checkpoint=True)
    assert "resuming from the checkpoint at step" in output
    assert rows_without_timing(resumed) == rows_without_timing(whole[0])
    assert event_lines(resumed) == event_lines(whole[0])


def test_sigint_then_launch_resume_continues_every_group_from_one_step(whole, tmp_path):
    driver, run_dir = interrupt(groups_args(tmp_path), tmp_path / "driver.log", both_groups_checkpointed,
                                signal.SIGINT, after=20)
    first = (tmp_path / "driver.log").read_text()
    assert driver.returncode == 128 + signal.SIGINT, first[-4000:]
    assert f"resume with: python -m launch resume {run_dir}" in first
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    # The newest checkpoint of the group that is behind (or level) cut short, as when the
    # driver stops while Ray copies it: the other group must then go back past its own newest.
    sealed = [{sealed_step(f): f for f in (run_dir / f"checkpoints_g{g}").glob("checkpoint_*")} for g in (0, 1)]
    for steps in sealed:
        steps.pop(None, None)
    behind = 0 if max(sealed[0]) < max(sealed[1]) else 1
    (sealed[behind].pop(max(sealed[behind])) / "seal_rank0.json").unlink()
    common = max(set(sealed[0]) & set(sealed[1]), default=0)
    assert common < max(sealed[1 - behind])

    done = subprocess.run([sys.executable, "-m", "launch", "resume", str(run_dir)], cwd=REPO, env=launch_env(),
                          capture_output=True, text=True, timeout=400)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert f"resuming all 2 groups from step {common}," in output
    assert run_dir_of(done.stdout) == run_dir
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "completed"
    assert rows_without_timing(run_dir) == rows_without_timing(whole[0])
    assert event_lines(run_dir) == event_lines(whole[0])
    assert "Traceback" not in first + output, (first + output)[-6000:]
