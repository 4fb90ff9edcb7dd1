"""The run's recorder: the one writer of `metrics.jsonl`, `pbt_events.jsonl`,
`restores.jsonl` and the TensorBoard event files (launch/runs/tensorboard.py). The Ray launchers run it as an actor on the driver's node
(launch/backends/ray_session.py), so that rank 0 can log from any node of a cluster; the
mpiexec launcher uses it directly on rank 0. It also keeps the run's failures
(launch/runs/failures.py): the workers' and its own, for it is the run's one record.

A write that fails (a full disk) raises OSError to the caller and stops the run: the
recorder records it as a failure that is not retried. Files stay whole (files.py)."""
import json
from collections.abc import Callable
from pathlib import Path

from launch.runs.failures import Failure, FailureHistory
from launch.runs.files import EVENTS, METRICS, RESTORES, append_lines, read_jsonl, read_metrics, to_json, write_atomic
from launch.runs.tensorboard import MemberBoards


class MetricsLog:
    """Owns `metrics.jsonl`: appends rows, and rewinds after a restart from a checkpoint.
    `resume`: the run is resumed (`launch resume`): what it logged so far is read back, and
    the workers rewind it to the checkpoint they restore."""

    def __init__(self, run_dir: str, *, resume: bool = False):
        self.metrics_path = Path(run_dir) / METRICS
        self.events_path = Path(run_dir) / EVENTS
        self.rows: list[dict] = read_metrics(self.metrics_path) if resume else []
        self.events: list[dict] = read_jsonl(self.events_path) if resume else []
        self.info: dict = {}
        self.boards = MemberBoards(run_dir)
        self.failures = FailureHistory()

    def log(self, rows: list[dict]) -> None:
        step = max((row["step"] for row in rows), default=None)
        self._writing(step, lambda: append_lines(self.metrics_path, [to_json(row) for row in rows]))
        self.rows.extend(rows)  # only rows that are on disk
        self._writing(step, lambda: self.boards.log(rows))

    def log_events(self, lines: list[str]) -> None:
        """PBT events, one JSON line each (pbt.events.Event.to_json)."""
        events = [json.loads(line) for line in lines]
        step = max((event["step"] for event in events), default=None)
        self._writing(step, lambda: append_lines(self.events_path, lines))
        self.events.extend(events)
        self._writing(step, lambda: self.boards.log_events(lines))

    def rewind(self, step: int, members: list[int] | None = None) -> None:
        """After a restart from the checkpoint at `step`, forget what was logged after it:
        all of it, or only the rows and the events (by target) of `members` (the group that
        restarted, population.groups > 1; the other groups go on)."""
        # All of it: every member logged so far, a resumed run's included (no writer open yet).
        board_members = members if members is not None else sorted({row["member"] for row in self.rows})
        stale = lambda record, member: record["step"] > step and (members is None or member in members)  # noqa: E731
        rows = [row for row in self.rows if not stale(row, row["member"])]
        events = [event for event in self.events if not stale(event, event["target"])]
        self._writing(step, lambda: write_atomic(self.metrics_path, "".join(to_json(row) + "\n" for row in rows)))
        self.rows = rows
        if self.events_path.exists():
            self._writing(step, lambda: write_atomic(self.events_path,
                                                     "".join(to_json(event) + "\n" for event in events)))
        self.events = events
        self._writing(step, lambda: self.boards.rewind(step, board_members))

    def log_restores(self, records: list[dict]) -> None:
        """`restores.jsonl`: what a member held right after it resumed from a checkpoint
        (the tune backend's evidence that an exploit took the donor's weights and kept the
        new hyperparameters)."""
        step = max((record["step"] for record in records), default=None)
        self._writing(step, lambda: append_lines(self.metrics_path.parent / RESTORES,
                                                 [to_json(record) for record in records]))

    def set_info(self, **info) -> None:
        self.info.update(info)

    def record_failure(self, failure: Failure) -> str | None:
        """A worker's failure; returns the reason to stop restarting, if there is one now."""
        return self.failures.record(failure)

    def stop_reason(self) -> str | None:
        return self.failures.stop_reason

    def failure_error(self) -> str | None:
        """What the recorded failures say ended the run (FailureHistory.error)."""
        return self.failures.error()

    def snapshot(self) -> tuple[list[dict], dict]:
        """The rows and facts for summary.json, the failures among them. The run is over:
        every TensorBoard event goes to disk (a failure to do so is recorded, not raised:
        the summary must still be written)."""
        try:
            self._writing(None, self.boards.close)
        except OSError:
            pass
        return self.rows, {**self.info, "failures": self.failures.summary()}

    def _writing(self, step: int | None, write: Callable[[], None]) -> None:
        """Run `write`; an OSError is recorded as the recorder's failure (it stops the run)
        and raised."""
        try:
            write()
        except OSError as err:
            self.failures.record(Failure.of(err, rank=None, step=step))
            raise

