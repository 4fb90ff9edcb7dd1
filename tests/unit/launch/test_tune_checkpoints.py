"""A Tune trial keeps its newest checkpoints itself (Tune's num_to_keep counts a checkpoint
PBT asked a function trainable to save twice: launch/backends/tune.py, prune_checkpoints)."""
from launch.backends.tune import prune_checkpoints


def test_a_trial_keeps_its_newest_checkpoints_and_nothing_else_goes(tmp_path):
    for index in (8, 9, 10, 11):
        (tmp_path / f"checkpoint_{index:06d}").mkdir()
        (tmp_path / f"checkpoint_{index:06d}" / "model.pt").write_bytes(b"x")
    for name in ("params.json", "result.json", "progress.csv"):
        (tmp_path / name).write_text("{}")
    prune_checkpoints(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint_000010", "checkpoint_000011", "params.json", "progress.csv", "result.json"]
    prune_checkpoints(tmp_path, keep=3)  # fewer than `keep`: nothing to do
    assert (tmp_path / "checkpoint_000010" / "model.pt").exists()
