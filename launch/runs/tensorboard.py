"""TensorBoard event files of a run: `tensorboard --logdir RUN_DIR/tensorboard` shows one
run per member (member00, member01, ...), so the members overlay on every chart:

  loss/train, loss/val, accuracy/val   the member's losses (and accuracy, for classifiers)
  lr                                   the learning rate that trained the step (schedule included)
  hyperparams/<name>                   lr, weight_decay, warmup, dropout, density as PBT sets them
  bytes/sent_per_step, bytes/sent_total, bytes/dense_per_step   what the member put on the wire
  pbt (text)                           each exploit that replaced the member, at its step

Written by the metric log (launch/runs/recorder.py), the one writer of the run's metrics,
synchronously: a write that fails (a full disk) raises in the recorder, which stops the run.
(tensorboardX's SummaryWriter writes from a thread that dies on such an error, after which
its bounded queue blocks the caller forever.) Each log call is flushed, so a chart a person
opens mid-run is current. After a restart from a checkpoint at step s, a member's writer is reopened with
`purge_step = s + 1`, which tells TensorBoard to hide what the member logged after s (it is
logged again), as metrics.jsonl is rewound.
"""
import functools
import json
import time
from pathlib import Path
from types import SimpleNamespace

FOLDER = "tensorboard"
ROW_SCALARS = {"loss": "loss/train", "val_loss": "loss/val", "val_accuracy": "accuracy/val", "lr": "lr",
               "bytes_sent": "bytes/sent_per_step", "bytes_sent_total": "bytes/sent_total",
               "dense_bytes": "bytes/dense_per_step"}


@functools.cache
def tensorboardx() -> SimpleNamespace:
    """tensorboardX's event writer and summaries, imported at the first write: tensorboardX
    imports torch (its SummaryWriter takes tensors), 1.4 s of CPU that the recorder actor
    would otherwise spend while the job's workers start."""
    from tensorboardX.event_file_writer import EventsWriter
    from tensorboardX.proto.event_pb2 import Event, SessionLog
    from tensorboardX.summary import scalar, text

    return SimpleNamespace(EventsWriter=EventsWriter, Event=Event, SessionLog=SessionLog, scalar=scalar, text=text)


class MemberWriter:
    """One member's event file, written in the caller's thread."""

    def __init__(self, folder: Path, *, purge_step: int | None, suffix: str):
        folder.mkdir(parents=True, exist_ok=True)
        self.tb = tensorboardx()
        self.events = self.tb.EventsWriter(str(folder / "events"), suffix)
        if purge_step is not None:
            # What SummaryWriter(purge_step=) writes: TensorBoard hides earlier files' events from there on.
            self._write(self.tb.Event(step=purge_step, session_log=self.tb.SessionLog(status=self.tb.SessionLog.START)))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self._write(self.tb.Event(step=step, summary=self.tb.scalar(tag, value)))

    def add_text(self, tag: str, value: str, step: int) -> None:
        self._write(self.tb.Event(step=step, summary=self.tb.text(tag, value)))

    def _write(self, event) -> None:
        event.wall_time = time.time()
        self.events.write_event(event)

    def flush(self) -> None:
        self.events.flush()

    def close(self) -> None:
        self.events.close()


class MemberBoards:
    def __init__(self, run_dir: str | Path):
        self.root = Path(run_dir) / FOLDER
        self.writers: dict[int, MemberWriter] = {}
        self.opened = 0  # writers opened so far: a file name of its own for each

    def _writer(self, member: int, purge_step: int | None = None) -> MemberWriter:
        if member not in self.writers or purge_step is not None:
            if member in self.writers:
                self.writers.pop(member).close()
            # A reopened writer's file must not share the name (time stamp and host) of the one it follows.
            self.opened += 1
            self.writers[member] = MemberWriter(self.root / f"member{member:02d}", purge_step=purge_step,
                                                suffix=f".{self.opened}")
        return self.writers[member]

    def flush(self) -> None:
        for writer in self.writers.values():
            writer.flush()

    def log(self, rows: list[dict]) -> None:
        for row in rows:
            writer, step = self._writer(row["member"]), row["step"]
            for key, tag in ROW_SCALARS.items():
                if isinstance(row.get(key), (int, float)):
                    writer.add_scalar(tag, row[key], step)
            for name, value in (row.get("hyperparams") or {}).items():
                writer.add_scalar(f"hyperparams/{name}", value, step)
        self.flush()

    def log_events(self, lines: list[str]) -> None:
        for line in lines:
            event = json.loads(line)
            changes = ", ".join(f"{name} {value:.3g}" for name, value in (event.get("new") or {}).items())
            self._writer(event["target"]).add_text(
                "pbt", f"member {event['target']} <- member {event['source']} ({event.get('reason')}): {changes}",
                event["step"])
        self.flush()

    def rewind(self, step: int, members: list[int] | None = None) -> None:
        for member in (members if members is not None else list(self.writers)):
            self._writer(member, purge_step=step + 1)
        self.flush()

    def close(self) -> None:
        """Write out everything; a later row opens a new file."""
        writers, self.writers, failed = list(self.writers.values()), {}, None
        for writer in writers:
            try:
                writer.close()
            except OSError as err:  # close the others all the same
                failed = failed or err
        if failed:
            raise failed
