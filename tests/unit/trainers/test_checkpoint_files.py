"""Checkpoint files (trainers/checkpoint.py): a checkpoint is complete only when every
rank's seal is there and every file it lists has its size; a corrupt file is named; restore
falls back from a corrupt or incomplete newest checkpoint to the previous complete one, the
same one on every rank; a full disk leaves no temporary file. And the readers: the mpiexec
store's earlier checkpoints, a member's final weights."""
import json

import pytest
import torch
import yaml

from launch.backends.mpi import DirectoryCheckpoints
from launch.runs.members import final_checkpoint
from tests.small_disk import small_disk
from trainers.checkpoint import CheckpointError, atomic_save, incomplete, load, restore_newest, seal, sealed_step


def write_checkpoint(folder, step: int, *, world_size: int = 2, ranks=None) -> None:
    """What the worker loop writes: rank 0 model.pt, every rank worker_rank{r}.pt, then seals."""
    folder.mkdir(parents=True, exist_ok=True)
    for rank in range(world_size) if ranks is None else ranks:
        names = [f"worker_rank{rank}.pt"] + (["model.pt"] if rank == 0 else [])
        if rank == 0:
            atomic_save({"step": torch.tensor(step), "model": {"w": torch.full((1, 3), float(step))}},
                        folder / "model.pt")
        atomic_save({"rng": torch.arange(4) + rank, "step": step}, folder / f"worker_rank{rank}.pt")
        seal(folder, rank=rank, world_size=world_size, step=step, names=names)


def corrupt(path) -> None:
    """Same size, different bytes: what a bit flip or a half-copied page looks like."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_complete_only_with_every_seal_and_every_file_whole(tmp_path):
    write_checkpoint(tmp_path / "a", 10)
    assert incomplete(tmp_path / "a") is None and sealed_step(tmp_path / "a") == 10
    write_checkpoint(tmp_path / "b", 20, ranks=[0])  # rank 1 never got there
    assert "no seal of rank(s) [1]" in incomplete(tmp_path / "b") and sealed_step(tmp_path / "b") is None
    write_checkpoint(tmp_path / "c", 30)
    model = tmp_path / "c" / "model.pt"
    model.write_bytes(model.read_bytes()[:100])  # a copy cut short
    assert incomplete(tmp_path / "c").startswith(f"{model}: 100 bytes")
    write_checkpoint(tmp_path / "d", 40)
    (tmp_path / "d" / "seal_rank1.json").write_text('{"step": 40, "wor')  # a torn seal
    assert "no seal of rank(s) [1]" in incomplete(tmp_path / "d")
    (tmp_path / "e").mkdir()
    assert "no seal" in incomplete(tmp_path / "e")


def test_a_corrupt_file_is_named(tmp_path):
    write_checkpoint(tmp_path, 10)
    assert load(tmp_path / "worker_rank1.pt")["step"] == 10
    corrupt(tmp_path / "worker_rank1.pt")
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'worker_rank1.pt'}: corrupt"):
        load(tmp_path / "worker_rank1.pt")
    # Without a seal (an older checkpoint), torch's own error, with the file's name.
    (tmp_path / "loose.pt").write_bytes(b"not a zip file")
    with pytest.raises(CheckpointError, match=f"{tmp_path / 'loose.pt'}: unreadable"):
        load(tmp_path / "loose.pt")


def test_restore_falls_back_to_the_previous_complete_checkpoint(tmp_path):
    for step in (10, 20, 30):
        write_checkpoint(tmp_path / f"step_{step:08d}", step)
    write_checkpoint(tmp_path / "step_00000040", 40, ranks=[0])  # incomplete: never a candidate
    corrupt(tmp_path / "step_00000030" / "model.pt")
    said = []
    state, worker_state = restore_newest(
        tmp_path / "step_00000030", lambda: [tmp_path / "step_00000020", tmp_path / "step_00000010"],
        rank=1, all_agree=lambda ok: ok, say=said.append)
    assert int(state["step"]) == 20 and worker_state["rng"].tolist() == [1, 2, 3, 4]
    assert len(said) == 1 and f"{tmp_path / 'step_00000030' / 'model.pt'}: corrupt" in said[0]


def test_every_rank_restores_the_same_step(tmp_path):
    """Rank 1's own file of the newest checkpoint is corrupt: rank 0 reads its files fine,
    but the ranks' agreement (a collective in the loop) sends both to the one before."""
    write_checkpoint(tmp_path / "old", 10)
    write_checkpoint(tmp_path / "new", 20)
    votes = iter([False, True])  # what the collective answers rank 0: rank 1 failed, then all good
    said = []
    state, _ = restore_newest(tmp_path / "new", lambda: [tmp_path / "old"], rank=0,
                              all_agree=lambda ok: ok and next(votes), say=said.append)
    assert int(state["step"]) == 10 and "another rank could not read its file" in said[0]


def test_no_intact_checkpoint_is_an_error_naming_every_file(tmp_path):
    write_checkpoint(tmp_path / "old", 10)
    write_checkpoint(tmp_path / "new", 20)
    corrupt(tmp_path / "old" / "model.pt")
    corrupt(tmp_path / "new" / "worker_rank0.pt")
    with pytest.raises(CheckpointError) as failed:
        restore_newest(tmp_path / "new", lambda: [tmp_path / "old"], rank=0, all_agree=lambda ok: ok,
                       say=lambda line: None)
    assert str(failed.value).startswith("no intact checkpoint to restore from: ")
    assert str(tmp_path / "new" / "worker_rank0.pt") in str(failed.value)
    assert str(tmp_path / "old" / "model.pt") in str(failed.value)


def test_a_full_disk_leaves_no_partial_or_temporary_checkpoint_file(tmp_path):
    with small_disk(tmp_path, "256k") as disk:
        disk.fill()
        with pytest.raises(OSError):
            atomic_save({"w": torch.zeros(100_000)}, disk.path / "model.pt")
        assert sorted(p.name for p in disk.path.iterdir()) == ["filler"]


def test_the_mpiexec_store_lists_complete_earlier_checkpoints_newest_first(tmp_path):
    store = DirectoryCheckpoints(tmp_path, rank=0, barrier=lambda: None, keep=5)
    for step in (10, 20, 30):
        store.save(step, lambda folder, step=step: write_checkpoint(folder, step, world_size=1))
    write_checkpoint(tmp_path / "step_00000025", 25, world_size=2, ranks=[0])  # cut short
    assert json.loads((tmp_path / "latest.json").read_text())["step"] == 30
    assert store.earlier(tmp_path / "step_00000030") == [tmp_path / "step_00000020", tmp_path / "step_00000010"]


def test_a_members_final_weights_skip_an_incomplete_checkpoint(tmp_path):
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({"population": {"size": 1}}))
    write_checkpoint(tmp_path / "checkpoints" / "checkpoint_a", 10)
    write_checkpoint(tmp_path / "checkpoints" / "checkpoint_b", 20, ranks=[0])  # Ray's copy cut short
    spec = yaml.safe_load((tmp_path / "spec.yaml").read_text())
    assert int(final_checkpoint(tmp_path, spec, 0).state["step"]) == 10
