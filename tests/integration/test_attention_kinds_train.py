"""Every attention kind added from the papers trains end to end like the first five: a
2-worker job (mpiexec, DeepSpeed) of 2 members under PBT with top-k compression, on
ListOps (padded, so the key masks act), a few steps each (configs/tiny_listops.yaml)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pbt.events import read_events
from tests.integration.conftest import REPO, launch_env, read_rows, run_dir_of

MPIEXEC = str(Path(sys.executable).with_name("mpiexec"))
# Each kind's options, sized for seq_len 64.
KINDS = {
    "hypercube": ["model.attention.block_size=8"],
    "mra": ["model.attention.block_size=8", "model.attention.blocks_per_row=2"],
    "rpe_fft": ["model.attention.max_offset=32"],  # a per-member table: the exploit copies it
    "collaborative": ["model.attention.key_dim=8"],  # per-member projections and mixing
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_kind_trains_under_pbt_and_compression(tmp_path, kind):
    args = [MPIEXEC, "-n", "2", sys.executable, "-m", "launch", "run", "configs/tiny_listops.yaml",
            "--set", f"run.storage={tmp_path}", "--set", f"model.attention.kind={kind}"]
    for item in KINDS[kind]:
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
