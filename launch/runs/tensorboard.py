"""TensorBoard event files of a run: `tensorboard --logdir RUN_DIR/tensorboard` shows one
run per member (member00, member01, ...), so the members overlay on every chart:

  loss/train, loss/val, accuracy/val   the member's losses (and accuracy, for classifiers)
  lr                                   the learning rate that trained the step (schedule included)
  hyperparams/<name>                   lr, weight_decay, warmup, dropout, density as PBT sets them
  bytes/sent_per_step, bytes/sent_total, bytes/dense_per_step   what the member put on the wire
  pbt (text)                           each exploit that replaced the member, at its step

Written by the metric log (launch/runs/recorder.py), the one writer of the run's metrics.
After a restart from a checkpoint at step s, a member's writer is reopened with
`purge_step = s + 1`, which tells TensorBoard to hide what the member logged after s (it is
logged again), as metrics.jsonl is rewound.
"""
import json
from pathlib import Path

from tensorboardX import SummaryWriter

FOLDER = "tensorboard"
ROW_SCALARS = {"loss": "loss/train", "val_loss": "loss/val", "val_accuracy": "accuracy/val", "lr": "lr",
               "bytes_sent": "bytes/sent_per_step", "bytes_sent_total": "bytes/sent_total",
               "dense_bytes": "bytes/dense_per_step"}


class MemberBoards:
    def __init__(self, run_dir: str | Path):
        self.root = Path(run_dir) / FOLDER
        self.writers: dict[int, SummaryWriter] = {}
        self.opened = 0  # writers opened so far: a file name of its own for each

    def _writer(self, member: int, purge_step: int | None = None) -> SummaryWriter:
        if member not in self.writers or purge_step is not None:
            if member in self.writers:
                self.writers[member].close()
            # A reopened writer's file must not share the name (time stamp and host) of the one
            # it follows. flush_secs: a chart a person opens mid-run is at most seconds old.
            self.opened += 1
            self.writers[member] = SummaryWriter(str(self.root / f"member{member:02d}"), purge_step=purge_step,
                                                 flush_secs=10, filename_suffix=f".{self.opened}")
        return self.writers[member]

    def log(self, rows: list[dict]) -> None:
        for row in rows:
            writer, step = self._writer(row["member"]), row["step"]
            for key, tag in ROW_SCALARS.items():
                if isinstance(row.get(key), (int, float)):
                    writer.add_scalar(tag, row[key], step)
            for name, value in (row.get("hyperparams") or {}).items():
                writer.add_scalar(f"hyperparams/{name}", value, step)

    def log_events(self, lines: list[str]) -> None:
        for line in lines:
            event = json.loads(line)
            changes = ", ".join(f"{name} {value:.3g}" for name, value in (event.get("new") or {}).items())
            self._writer(event["target"]).add_text(
                "pbt", f"member {event['target']} <- member {event['source']} ({event.get('reason')}): {changes}",
                event["step"])

    def rewind(self, step: int, members: list[int] | None = None) -> None:
        for member in (members if members is not None else list(self.writers)):
            self._writer(member, purge_step=step + 1)

    def close(self) -> None:
        """Write out everything (a writer's flush() leaves its queue to a background thread;
        close() drains it). A later row opens a new file."""
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()
