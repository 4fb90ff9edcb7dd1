"""A member of a finished run: which one is best, and where its final weights are, for
every launcher's checkpoint layout:

  checkpoints/<folder>/model.pt             one group (Ray Train's folders, or mpiexec's step_*)
  checkpoints_g{g}/<folder>/model.pt        population.groups: member m is group m // P, row m % P
  tune/member{NN}/<folder>/model.pt         population.backend: tune: member m is trial m, row 0

The final weights are those of the complete checkpoint with the highest step (a job always
checkpoints its last step); one cut short (trainers/checkpoint.py: its seals) is skipped.
Runs from before checkpoints were sealed have no seals at all: all their checkpoints count."""
from dataclasses import dataclass
from pathlib import Path

import torch

from launch.runs.files import SUMMARY, read_json
from trainers.checkpoint import incomplete, seals


@dataclass(frozen=True)
class MemberCheckpoint:
    state: dict  # model.pt: "model" (the population's state dict), "step", ...
    row: int  # the member's index on the member axis of that state
    members: int  # the length of that axis


def best_member(run_dir: Path) -> int:
    """The member with the lowest final validation loss (as the report ranks them)."""
    members = read_json(run_dir / SUMMARY).get("members") or {}
    scored = {int(m): info["final_val_loss"] for m, info in members.items()
              if isinstance(info, dict) and isinstance(info.get("final_val_loss"), (int, float))}
    if not scored:
        raise ValueError(f"{run_dir}: summary.json names no member with a final validation loss; "
                         "pick one with --member N")
    return min(scored, key=scored.get)


def final_checkpoint(run_dir: Path, spec: dict, member: int) -> MemberCheckpoint:
    """Member `member`'s (global id) last checkpoint; `spec` is the run's spec.yaml."""
    population = spec.get("population") or {}
    size, groups = int(population.get("size", 1)), int(population.get("groups", 1))
    if population.get("backend") == "tune":
        root, row, members = run_dir / "tune" / f"member{member:02d}", 0, 1
        count = size
    else:
        root = run_dir / (f"checkpoints_g{member // size}" if groups > 1 else "checkpoints")
        row, members, count = member % size, size, size * groups
    if not 0 <= member < count:
        raise ValueError(f"member {member} is not in this run: it has members 0..{count - 1}")
    paths = list(root.glob("**/model.pt"))
    if any(seals(path.parent) for path in paths):
        paths = [path for path in paths if incomplete(path.parent) is None]
    # Memory-mapped: comparing steps reads only each file's counters, not every weight.
    states = [torch.load(path, weights_only=True, mmap=True) for path in paths]
    if not states:
        raise ValueError(f"{root}: no complete checkpoint (model.pt) of member {member}")
    return MemberCheckpoint(max(states, key=lambda state: int(state["step"])), row, members)
