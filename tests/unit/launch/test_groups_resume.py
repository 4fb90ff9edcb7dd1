"""Where the groups of a resumed run start (launch/backends/groups_resume.py): the newest
step every group has a complete, intact checkpoint of, and the global decider rebuilt from
those checkpoints' hyperparameters. Checkpoint folders are written as the workers write
them (trainers/checkpoint.py: files, then the seal)."""
import torch

from launch.backends.groups_resume import group_checkpoint_root, resume_point
from pbt.config import PBTConfig
from pbt.controller import PBTController
from pbt.groups import GroupLayout, group_controller_state, merged_controller_state
from trainers.checkpoint import atomic_save, seal

LAYOUT = GroupLayout(groups=2, members=2)


def controller() -> PBTController:
    config = PBTConfig(perturbation_interval=10, quantile_fraction=0.5,
                       hyperparam_mutations={"lr": {"loguniform": [1e-4, 1e-2]}, "dropout": [0.0, 0.1]})
    return PBTController(config, members=LAYOUT.population, seed=0, defaults={"lr": 1e-3, "dropout": 0.0})


def checkpoint(run_dir, group: int, step: int, state: dict, *, sealed: bool = True):
    """Group `group`'s checkpoint at `step` holding its slice of the global `state`."""
    folder = group_checkpoint_root(run_dir, group) / f"checkpoint_{step:04d}"
    folder.mkdir(parents=True)
    atomic_save({"step": torch.tensor(step), "population": group_controller_state(state, LAYOUT, group)},
                folder / "model.pt")
    if sealed:
        seal(folder, rank=0, world_size=1, step=step, names=["model.pt"])
    return folder


def test_merging_the_groups_slices_gives_the_global_state_back():
    decider = controller()
    decider.decide(10, [1.0, 1.5, 3.0, 2.5])  # group 1's members copy group 0's: their values change
    state = decider.state_dict()
    assert merged_controller_state([group_controller_state(state, LAYOUT, g) for g in (0, 1)], LAYOUT) == state


def test_every_group_starts_from_the_newest_step_all_of_them_checkpointed(tmp_path):
    decider = controller()
    decider.decide(10, [1.0, 1.5, 3.0, 2.5])
    at_20 = decider.state_dict()
    decider.decide(20, [3.0, 2.5, 1.0, 1.5])
    at_40 = decider.state_dict()
    assert at_40 != at_20
    checkpoint(tmp_path, 0, 20, at_20)
    checkpoint(tmp_path, 1, 20, at_20)
    checkpoint(tmp_path, 0, 40, at_40)  # group 0 got further before the driver stopped
    checkpoint(tmp_path, 1, 40, at_40, sealed=False)  # group 1's was cut short
    point = resume_point(tmp_path, LAYOUT)
    assert point.step == 20
    assert [start.folder for start in point.starts] == [
        str((group_checkpoint_root(tmp_path, g) / "checkpoint_0020").resolve()) for g in (0, 1)]
    assert point.controller_state == at_20
    # Every folder the earlier driver left is known as such, the newer ones included.
    assert all(len(start.earlier) == 2 for start in point.starts)

    # With both complete at 40 but group 1's model.pt corrupt there, 20 it is again.
    folder = group_checkpoint_root(tmp_path, 1) / "checkpoint_0040"
    seal(folder, rank=0, world_size=1, step=40, names=["model.pt"])
    assert resume_point(tmp_path, LAYOUT).step == 40
    data = bytearray((folder / "model.pt").read_bytes())
    data[-10] ^= 0xFF
    (folder / "model.pt").write_bytes(bytes(data))
    assert resume_point(tmp_path, LAYOUT).step == 20


def test_without_a_common_checkpoint_every_group_starts_over(tmp_path):
    checkpoint(tmp_path, 0, 20, controller().state_dict())
    point = resume_point(tmp_path, LAYOUT)
    assert point.step == 0 and point.controller_state is None
    assert [start.folder for start in point.starts] == [None, None]
    assert [len(start.earlier) for start in point.starts] == [1, 0]
