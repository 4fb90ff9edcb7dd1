"""Every attention kind that reads the task's grid (`uses_grid`, trainers/attention/grid.py;
kinds registered later join automatically) trains end to end on Pathfinder, a task with a
grid: a 2-worker job (mpiexec, DeepSpeed) of 2 members under PBT with top-k compression, a
few steps each (configs/tiny_pathfinder.yaml, 16x16 images generated into a temporary
cache). The exported member is rebuilt from its config.json alone, so the export must
carry the grid."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from launch.runs.export import export_member
from pbt.events import read_events
from tests.integration.conftest import REPO, launch_env, read_rows, run_dir_of
from trainers.attention import ALL_KINDS
from trainers.attention.grid import uses_grid
from trainers.export import load_exported

MPIEXEC = str(Path(sys.executable).with_name("mpiexec"))
GRID_KINDS = sorted(kind for kind, cls in ALL_KINDS.items() if uses_grid(cls))


@pytest.mark.parametrize("kind", GRID_KINDS)
def test_grid_kind_trains_on_pathfinder_under_pbt_and_compression(tmp_path, monkeypatch, kind):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # workers and export share this cache
    args = [MPIEXEC, "-n", "2", sys.executable, "-m", "launch", "run", "configs/tiny_pathfinder.yaml",
            "--set", f"run.storage={tmp_path}", "--set", f"model.attention.kind={kind}"]
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

    exported = load_exported(export_member(run_dir, "best"))
    assert exported.config["shape"]["grid"] == [16, 16]
    images = torch.randint(0, 256, (3, 256), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = exported(images)
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()
