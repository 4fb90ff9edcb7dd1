"""The run's recorder: the one writer of `metrics.jsonl`."""
import json
import os
from pathlib import Path

import ray


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


class MetricsLog:
    """Owns `metrics.jsonl`: appends rows, and rewinds after a restart from a checkpoint."""

    def __init__(self, run_dir: str):
        self.metrics_path = Path(run_dir) / "metrics.jsonl"
        self.rows: list[dict] = []
        self.info: dict = {}

    def log(self, rows: list[dict]) -> None:
        self.rows.extend(rows)
        with self.metrics_path.open("a") as handle:
            handle.writelines(json.dumps(row) + "\n" for row in rows)

    def rewind(self, step: int) -> None:
        """After a restart from the checkpoint at `step`, forget rows logged after it."""
        self.rows = [row for row in self.rows if row["step"] <= step]
        write_atomic(self.metrics_path, "".join(json.dumps(row) + "\n" for row in self.rows))

    def set_info(self, **info) -> None:
        self.info.update(info)

    def snapshot(self) -> tuple[list[dict], dict]:
        return self.rows, self.info


# The Ray launcher runs the log as an actor on the driver's node, so that rank 0 can log
# from any node of a cluster; the mpiexec launcher uses MetricsLog directly on rank 0.
RunRecorder = ray.remote(num_cpus=0)(MetricsLog)
