"""Every attention kind that reads the task's grid (`uses_grid`, trainers/attention/grid.py;
kinds registered later join automatically) trains end to end on Pathfinder, a task with a
grid: a 2-worker job (mpiexec, DeepSpeed) of 2 members under PBT with top-k compression, a
few steps each (configs/tiny_pathfinder.yaml, 16x16 images generated into a temporary
cache). The exported member is rebuilt from its config.json alone, so the export must
carry the grid."""
import pytest
import torch

from launch.runs.export import export_member
from tests.integration.conftest import train_two_members_under_pbt
from trainers.attention import ALL_KINDS
from trainers.attention.grid import uses_grid
from trainers.export import load_exported

GRID_KINDS = sorted(kind for kind, cls in ALL_KINDS.items() if uses_grid(cls))


@pytest.mark.parametrize("kind", GRID_KINDS)
def test_grid_kind_trains_on_pathfinder_under_pbt_and_compression(tmp_path, monkeypatch, kind):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # workers and export share this cache
    run_dir = train_two_members_under_pbt("configs/tiny_pathfinder.yaml", tmp_path, f"model.attention.kind={kind}")

    exported = load_exported(export_member(run_dir, "best"))
    assert exported.config["shape"]["grid"] == [16, 16]
    images = torch.randint(0, 256, (3, 256), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        logits = exported(images)
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()
