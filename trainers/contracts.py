"""What the worker loop (trainers/loop.py) needs from whoever launches it, as protocols:
a launcher satisfies them with its own classes (launch/backends/: ray_session.py, groups.py,
tune.py, mpi.py; the hyperparameter stores of pbt/), and the loop imports none of them.
"""
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

if TYPE_CHECKING:
    from compression import ByteReport
    from trainers.loop import Worker


class Reporter(Protocol):
    """Where rank 0's output goes (the other ranks have none)."""

    def log(self, rows: list[dict]) -> None:
        """Metric rows, one per member and logged step."""

    def log_events(self, lines: list[str]) -> None:
        """PBT events as JSON lines (pbt_events.jsonl)."""

    def rewind(self, step: int) -> None:
        """Drop the rows past `step`: a restarted run resumes there and logs them again."""

    def set_info(self, **info: Any) -> None:
        """Facts of the run for summary.json (parameters per member, world size, ...)."""


class CheckpointStore(Protocol):
    def save(self, step: int, write_files: Callable[[Path], None]) -> None:
        """A checkpoint of `step`: `write_files(folder)` writes this rank's files."""

    def latest(self) -> AbstractContextManager[str | Path | None]:
        """The newest checkpoint's folder to restore from, or None to start fresh."""

    def earlier(self, latest: Path) -> list[Path]:
        """The checkpoints before `latest`, newest first: where a restore falls back to when
        `latest` is incomplete or corrupt."""


class TaskData(Protocol):
    """A task's data (trainers/tasks/), sharded by rank and seeded per member and step."""

    vocab_size: int
    num_classes: int | None  # None: language modelling
    pad_id: int | None
    causal: bool
    grid: tuple[int, int] | None  # (H, W): tokens are an image read row by row; None for 1-D tasks
    patch_size: int  # p > 1: the ids are the pixels of a (H·p, W·p) image, a token per p x p patch

    def train_batch(self, *, rank: int, world_size: int, member: int, step: int,
                    batch_size: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    def train_batches(self, *, rank: int, world_size: int, members: int, step: int,
                      batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`train_batch` of members 0..members-1 stacked ([P, B, ...]), built as one tensor."""

    def val_batches(self, *, rank: int, world_size: int, batch_size: int,
                    max_batches: int | None) -> list[tuple[torch.Tensor, torch.Tensor]]: ...


class HyperparamSource(Protocol):
    """Members' hyperparameters (lr, weight_decay, warmup, dropout, density), checkpointed
    with the weights (pbt.hyperparams.HyperparamStore)."""

    initial: dict[str, list[float]]

    def member_hyperparams(self, member: int) -> dict[str, float]: ...

    def hyperparams_tensor(self, name: str, *, dtype: torch.dtype) -> torch.Tensor:
        """Hyperparameter `name` of every member as a [P] tensor."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None:
        """From a checkpoint (a source may keep its own values, as a Ray Tune trial does)."""


class PerturbationRounds(Protocol):
    """How PBT rounds are decided and applied: the one part of the loop that differs between
    the flavours (none; one group's controller, trainers/rounds.py; the coordinator of
    several groups, launch/backends/groups.py; Ray Tune between runs, launch/backends/tune.py)."""

    def begin(self, worker: "Worker") -> int:
        """The run begins, its checkpoint restored (if any): returns the step to stop at."""

    def is_round(self, step: int) -> bool:
        """Whether a round follows `step` (the loop evaluates first when PBT ranks by val_loss)."""

    def after_step(self, worker: "Worker", scores_P: torch.Tensor, bytes_report: "ByteReport") -> None:
        """Decide and apply what follows the worker's current step, identically on every
        worker: `scores_P` (the metric PBT ranks by) is the same on all of them."""
