"""How a worker is started, reports and checkpoints, under each launcher.

Ray Train (`distributed.launcher: ray`): rank and world size from Ray Train's context,
metric rows to the RunRecorder actor, checkpoints through `ray.train.report` (Ray Train
restores the latest one into a restarted worker group).

mpiexec (`distributed.launcher: mpi`): ranks from MPI, rank 0 owns the run directory,
checkpoints are folders under `<run_dir>/checkpoints/` finished by a `latest` marker.
"""
import contextlib
import json
import shutil
import tempfile
from pathlib import Path

from trainers.loop import Worker, WorkerPlan


class ActorReporter:
    """Fire-and-forget calls to the RunRecorder actor (Ray keeps their order)."""

    def __init__(self, recorder):
        self.recorder = recorder

    def log(self, rows):
        self.recorder.log.remote(rows)

    def log_events(self, lines):
        self.recorder.log_events.remote(lines)

    def rewind(self, step):
        self.recorder.rewind.remote(step)

    def set_info(self, **info):
        self.recorder.set_info.remote(**info)


class RayTrainCheckpoints:
    def save(self, step: int, write_files) -> None:
        import ray.train

        with tempfile.TemporaryDirectory() as tmp:
            write_files(Path(tmp))
            ray.train.report(self.metrics(step), checkpoint=ray.train.Checkpoint.from_directory(tmp))

    def metrics(self, step: int) -> dict:
        """What Ray Train records beside the checkpoint (its Result.metrics)."""
        return {"step": step}

    @contextlib.contextmanager
    def latest(self):
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
            return
        with checkpoint.as_directory() as folder:
            yield folder


def ray_train_worker(config: dict) -> None:
    """Ray Train's `train_loop_per_worker`: `config = {"plan": WorkerPlan, "recorder": actor}`."""
    import ray.train

    context = ray.train.get_context()
    Worker(config["plan"], rank=context.get_world_rank(), world_size=context.get_world_size(),
           reporter=ActorReporter(config["recorder"]), checkpoints=RayTrainCheckpoints()).run()


class DirectoryCheckpoints:
    """`<root>/step_00000100/` per checkpoint; `<root>/latest.json` names the newest
    complete one (written by rank 0 after every rank has written its files), and only the
    newest `keep` folders are kept."""

    def __init__(self, root: Path, *, rank: int, barrier, keep: int):
        self.root, self.rank, self.barrier, self.keep = root, rank, barrier, keep

    def save(self, step: int, write_files) -> None:
        folder = self.root / f"step_{step:08d}"
        if self.rank == 0:
            folder.mkdir(parents=True, exist_ok=True)
        self.barrier()
        write_files(folder)
        self.barrier()
        if self.rank == 0:
            from launch.recorder import write_atomic

            write_atomic(self.root / "latest.json", json.dumps({"step": step, "folder": folder.name}) + "\n")
            for old in sorted(self.root.glob("step_*"))[:-self.keep]:
                shutil.rmtree(old)

    @contextlib.contextmanager
    def latest(self):
        # An mpiexec job is not restarted by a supervisor: it always starts fresh.
        yield None
