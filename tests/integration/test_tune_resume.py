"""Ray Tune PBT with asynchronous trials (`synch: false`), 2 trials × 1 worker, 3 rounds of
10 steps: interrupted (SIGINT to the driver) once a trial has reported a round, then
continued with `launch resume` (Tune's experiment restore). One run serves two checks:
- the resumed run ends `completed` with every member's rows, each logged step once;
- asynchronous trials get saved by PBT while they run (a running trial among the best is
  asked for a checkpoint, which a function trainable answers with the one it just
  reported): Tune then logged `ERROR ... Error handling checkpoint ... FileNotFoundError` when
  it pruned that checkpoint twice (launch/backends/tune.py, prune_checkpoints). No ERROR
  line, and every checkpoint the run depends on is there."""
import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from pbt.events import read_events
from tests.integration.conftest import REPO, launch_env, read_rows, run_dir_of
from tests.integration.test_interrupt_resume import interrupt
from trainers.checkpoint import sealed_step

STEPS, ROUND = 30, 10
SPEC = ["configs/tune_pbt.yaml", "--set", "population.size=2", "--set", "population.pbt.synch=false",
        "--set", f"train.steps={STEPS}"]
ERROR_LINE = re.compile(r"\bERROR [\w.]+\.py:\d+ --")


def tune_checkpoint_step(run_dir: Path) -> int:
    """The newest step of a complete checkpoint Tune holds for any trial (0: none yet)."""
    return max((sealed_step(f) or 0 for f in (run_dir / "tune").glob("member*/checkpoint_*")), default=0)


@pytest.fixture(scope="module")
def tune_run(tmp_path_factory):
    """(run directory, the interrupted driver's exit status and output, the resumed run)."""
    storage = tmp_path_factory.mktemp("tune-resume")
    log = storage / "driver.log"
    driver, run_dir = interrupt([sys.executable, "-m", "launch", "run", *SPEC, "--set", f"run.storage={storage}"],
                                log, tune_checkpoint_step, signal.SIGINT, after=ROUND)
    resumed = subprocess.run([sys.executable, "-m", "launch", "resume", str(run_dir)], check=False, cwd=REPO,
                             env=launch_env(), capture_output=True, text=True, timeout=600)
    return run_dir, driver.returncode, log.read_text(), resumed


def test_an_interrupted_tune_run_resumes_to_its_last_step(tune_run):
    run_dir, returncode, first, resumed = tune_run
    assert returncode == 128 + signal.SIGINT, first[-4000:]
    assert f"resume with: python -m launch resume {run_dir}" in first
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-6000:]
    assert run_dir_of(resumed.stdout) == run_dir
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == STEPS
    rows = read_rows(run_dir)
    # Rows past a trial's restored checkpoint were rewound: every logged step once per member.
    for member in (0, 1):
        assert [r["step"] for r in sorted(rows, key=lambda r: r["step"]) if r["member"] == member] == \
            list(range(5, STEPS + 1, 5)), member
    for text in (first, output):
        assert "Traceback" not in outside_trial_actors(text), text[-6000:]


def outside_trial_actors(output: str) -> str:
    """The output without the trial actors' own lines. Tune stops the actor of a trial that
    PBT pauses with SIGTERM, and Ray's handler may then print a SystemExit traceback from
    wherever that process was; a trial that really failed shows in the status and the rows."""
    return "\n".join(line for line in output.splitlines() if "(member_trial pid=" not in line)


def test_asynchronous_trials_log_no_error_and_keep_the_checkpoints_they_need(tune_run):
    run_dir, _, first, resumed = tune_run
    for output in (first, resumed.stdout + resumed.stderr):
        assert not ERROR_LINE.search(output) and "Error handling checkpoint" not in output, output[-6000:]
    # Every checkpoint Tune holds is whole; each trial's last one, which a resume or an exploit
    # of it would read, is there.
    held = list((run_dir / "tune").glob("member*/checkpoint_*"))
    assert held and all(sealed_step(folder) is not None for folder in held), held
    from ray.tune import ExperimentAnalysis

    trials = ExperimentAnalysis(str(run_dir / "tune")).trials
    assert len(trials) == 2
    for trial in trials:
        assert trial.checkpoint is not None and sealed_step(Path(trial.checkpoint.path)) == STEPS, trial
    # Every exploit's donor checkpoint was there when its target restored it. Once both trials
    # have a score, a trial reporting a round is either exploited (the worse one) or saved by
    # PBT while it runs (the better one: the case that led to the error); which, depends on
    # which trial reports first (asynchronous PBT), so there may be no exploit at all.
    events_file = run_dir / "pbt_events.jsonl"
    events = read_events(events_file.read_text().splitlines()) if events_file.exists() else []
    restores = [json.loads(line) for line in (run_dir / "restores.jsonl").read_text().splitlines()]
    for event in events:
        assert any((r["member"], r["step"], r["hyperparams"]) == (event.target, event.step, event.new)
                   for r in restores), (event, restores)
