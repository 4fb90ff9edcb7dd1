"""The run's recorder: the one writer of `metrics.jsonl`, `pbt_events.jsonl`,
`restores.jsonl` and the TensorBoard event files (launch/runs/tensorboard.py). The Ray launchers run it as an actor on the driver's node
(launch/backends/ray_session.py), so that rank 0 can log from any node of a cluster; the
mpiexec launcher uses it directly on rank 0."""
import json
from pathlib import Path

from launch.runs.files import EVENTS, METRICS, RESTORES, read_jsonl, write_atomic
from launch.runs.tensorboard import MemberBoards


class MetricsLog:
    """Owns `metrics.jsonl`: appends rows, and rewinds after a restart from a checkpoint.
    `resume`: the run is resumed (`launch resume`): what it logged so far is read back, and
    the workers rewind it to the checkpoint they restore."""

    def __init__(self, run_dir: str, *, resume: bool = False):
        self.metrics_path = Path(run_dir) / METRICS
        self.events_path = Path(run_dir) / EVENTS
        self.rows: list[dict] = read_jsonl(self.metrics_path) if resume else []
        self.events: list[dict] = read_jsonl(self.events_path) if resume else []
        self.info: dict = {}
        self.boards = MemberBoards(run_dir)

    def log(self, rows: list[dict]) -> None:
        self.rows.extend(rows)
        with self.metrics_path.open("a") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)
        self.boards.log(rows)

    def log_events(self, lines: list[str]) -> None:
        """PBT events, one JSON line each (pbt.events.Event.to_json)."""
        self.events.extend(json.loads(line) for line in lines)
        with self.events_path.open("a") as handle:
            handle.writelines(line + "\n" for line in lines)
        self.boards.log_events(lines)

    def rewind(self, step: int, members: list[int] | None = None) -> None:
        """After a restart from the checkpoint at `step`, forget what was logged after it:
        all of it, or only the rows and the events (by target) of `members` (the group that
        restarted, population.groups > 1; the other groups go on)."""
        # All of it: every member logged so far, a resumed run's included (no writer open yet).
        self.boards.rewind(step, members if members is not None else sorted({row["member"] for row in self.rows}))
        stale = lambda record, member: record["step"] > step and (members is None or member in members)  # noqa: E731
        self.rows = [row for row in self.rows if not stale(row, row["member"])]
        self.events = [event for event in self.events if not stale(event, event["target"])]
        write_atomic(self.metrics_path, "".join(json.dumps(row) + "\n" for row in self.rows))
        if self.events_path.exists():
            write_atomic(self.events_path, "".join(json.dumps(event) + "\n" for event in self.events))

    def log_restores(self, records: list[dict]) -> None:
        """`restores.jsonl`: what a member held right after it resumed from a checkpoint
        (the tune backend's evidence that an exploit took the donor's weights and kept the
        new hyperparameters)."""
        with (self.metrics_path.parent / RESTORES).open("a") as handle:
            handle.writelines(json.dumps(record) + "\n" for record in records)

    def set_info(self, **info) -> None:
        self.info.update(info)

    def snapshot(self) -> tuple[list[dict], dict]:
        self.boards.close()  # the run is over: every event on disk
        return self.rows, self.info

