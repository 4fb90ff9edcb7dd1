"""Ray Tune PBT across trials (population.backend: tune), 4 trials × 1 DeepSpeed worker:
an exploited trial continues from the donor's checkpointed weights, and trains with its
new learning rate, not the one in the donor's optimizer state."""
import json
import re
from pathlib import Path

import torch

from pbt.events import read_events, replay
from tests.integration.conftest import read_rows


def checkpoint_digests(tune_dir: Path) -> dict[tuple[int, int], float]:
    """(member, step) -> weights digest of every checkpoint Tune kept (trial dirs are member<NN>)."""
    digests = {}
    for folder in tune_dir.glob("member*/checkpoint_*"):
        step = int(torch.load(folder / "model.pt", weights_only=True)["step"])
        digest = torch.load(folder / "worker_rank0.pt", weights_only=True)["replica_digest"]
        digests[(int(folder.parent.name.removeprefix("member")), step)] = float(digest[0])
    return digests


def test_exploit_restores_donor_weights_and_applies_the_new_learning_rate(run_launch):
    done, run_dir = run_launch("configs/tune_pbt.yaml", timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-6000:]
    # A successful run logs no error: none from Tune's controller ("ERROR tune_controller.py:
    # ... Error handling checkpoint ... FileNotFoundError" came from Tune deleting a checkpoint
    # PBT had made it register twice; launch/backends/tune.py, prune_checkpoints).
    assert not re.search(r"\bERROR [\w.]+\.py:\d+ --", output), output[-6000:]
    assert "Error handling checkpoint" not in output
    assert (run_dir / "tune" / "pbt_global.txt").exists()  # Ray's own exploit log is kept
    events = read_events((run_dir / "pbt_events.jsonl").read_text().splitlines())
    # Synchronous PBT, 4 trials, quantile 0.5: the worse two clone the better two at step 10
    # (Tune stops trials at step 20, the last, before PBT sees it).
    assert len(events) == 2 and {event.step for event in events} == {10}, events

    restores = [json.loads(line) for line in (run_dir / "restores.jsonl").read_text().splitlines()]
    donors = checkpoint_digests(run_dir / "tune")
    for event in events:
        assert event.target != event.source and event.new != event.old
        [restored] = [r for r in restores if (r["member"], r["step"], r["hyperparams"])
                      == (event.target, event.step, event.new)]
        assert restored["weights_digest"] == donors[(event.source, event.step)]
        # configs/tune_pbt.yaml: constant schedule, no warm-up, so the optimizer's rate is PBT's.
        assert restored["lr"] == event.new["lr"] != event.old["lr"]

    # metrics.jsonl numbers members by trial; the events replay onto each row's hyperparameters.
    rows = read_rows(run_dir)
    assert {row["member"] for row in rows} == {0, 1, 2, 3}
    assert all(max(r["step"] for r in rows if r["member"] == m) == 20 for m in range(4))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 20
    history = replay(events, summary["initial_hyperparams"])
    for row in rows:
        assert history[row["member"]].at(row["step"] - 1) == row["hyperparams"], row
    assert {row["lr"] for row in rows if row["member"] == events[0].target} >= {events[0].new["lr"]}
    assert (run_dir / "report.md").exists() and (run_dir / "val_loss.png").exists()
    assert not (run_dir / "rounds").exists()
