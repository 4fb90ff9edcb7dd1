"""Where the groups of a resumed run start (`launch resume` of population.groups = G > 1).

The groups of a run checkpoint the same steps (run.checkpoint_interval), but not at the same
moment: when the driver stopped, one group may have a newer checkpoint than another. A
round needs every group at the same step, and the coordinator's memory of the rounds went
with the driver, so every group restarts from one step: the newest that every group has a
complete checkpoint of (rank 0's model.pt read intact). The coordinator's decider is rebuilt
from those checkpoints (each holds its group's hyperparameters as the round at that step
left them; a decision depends on nothing else but the step and the seed, pbt/controller.py).

No Ray here: the driver (launch/backends/groups.py) finds the starts, each group's
GroupCheckpoints restores its own.
"""
from dataclasses import dataclass
from pathlib import Path

from pbt.groups import GroupLayout, merged_controller_state
from trainers.checkpoint import CheckpointError, load, sealed_step


def group_checkpoint_root(run_dir: Path, group: int) -> Path:
    """Ray Train's storage of group `group`'s checkpoints (its TorchTrainer's name)."""
    return Path(run_dir) / f"checkpoints_g{group}"


@dataclass(frozen=True)
class GroupStart:
    """Where one group of a resumed run starts."""

    folder: str | None  # its checkpoint at the common step; None: from step 0
    earlier: frozenset[str]  # every checkpoint folder an earlier driver left (resolved paths)


@dataclass(frozen=True)
class ResumePoint:
    step: int  # the common step (0: from the start)
    starts: list[GroupStart]  # per group
    controller_state: dict | None  # the decider's state at `step` (None: a fresh one)


def resume_point(run_dir: Path, layout: GroupLayout) -> ResumePoint:
    """The newest step that every group has a complete checkpoint of, each group's folder of
    it, and the global hyperparameters then. A step where some group's model.pt does not
    read intact is passed over for the one before."""
    complete = []  # per group: step -> folder
    earlier = []
    for group in range(layout.groups):
        folders = sorted(path.resolve() for path in group_checkpoint_root(run_dir, group).glob("checkpoint_*")
                         if path.is_dir())
        earlier.append(frozenset(str(folder) for folder in folders))
        steps = {sealed_step(folder): folder for folder in folders}
        steps.pop(None, None)
        complete.append(steps)
    for step in sorted(set.intersection(*(set(steps) for steps in complete)), reverse=True):
        try:
            states = [load(steps[step] / "model.pt")["population"] for steps in complete]
        except CheckpointError:
            continue
        return ResumePoint(step, [GroupStart(str(steps[step]), seen) for steps, seen in zip(complete, earlier)],
                           merged_controller_state(states, layout))
    return ResumePoint(0, [GroupStart(None, seen) for seen in earlier], None)
