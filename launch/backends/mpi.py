"""The mpiexec launcher (`distributed.launcher: mpi`), for clusters whose jobs start
under an MPI launcher rather than Ray:

    mpiexec -n 2 python -m launch run configs/compression_mpi.yaml

Every rank runs this; ranks are discovered through MPI. Rank 0 owns the run directory
(same files as the Ray launcher) and broadcasts its path; the worker loop is the same.
Checkpoints are folders under `<run_dir>/checkpoints/` finished by a `latest.json` marker.
Nothing here imports Ray (or matplotlib, until rank 0 writes the report at the end).
"""
import contextlib
import json
import os
import shutil
import socket
import time
import traceback
from pathlib import Path

from launch.backends.plan import worker_plan
from launch.runs.directory import finish_run, prepare_run_dir
from launch.runs.failures import STORAGE_ERRNOS, Failure
from launch.runs.files import write_atomic
from launch.runs.recorder import MetricsLog
from launch.spec.problems import Problem, SpecError
from launch.spec.schema import JobSpec
from trainers.checkpoint import sealed_step
from trainers.loop import Worker, import_deepspeed


def init_torch_distributed(comm, backend: str) -> None:
    """torch.distributed for DeepSpeed from MPI facts: loopback when every rank is on one
    host (else rank 0's address, or MASTER_ADDR if set), and a free port chosen by rank 0."""
    hosts = comm.allgather(socket.gethostname())
    if comm.rank == 0:
        if len(set(hosts)) == 1:
            address = "127.0.0.1"
        else:
            address = os.environ.get("MASTER_ADDR") or socket.gethostbyname(socket.gethostname())
        with socket.socket() as sock:
            sock.bind((address, 0))
            port = sock.getsockname()[1]
    else:
        address = port = None
    address, port = comm.bcast((address, port), root=0)
    os.environ.update(RANK=str(comm.rank), WORLD_SIZE=str(comm.size), MASTER_ADDR=address, MASTER_PORT=str(port),
                      LOCAL_RANK=str(hosts[:comm.rank].count(hosts[comm.rank])))
    import deepspeed

    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)


def run_mpi_job(spec: JobSpec) -> Path | None:
    """Run this rank's part of the job; rank 0 returns the run directory."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if comm.size != spec.distributed.num_workers:
        raise SpecError([Problem("distributed.num_workers",
                                 f"{spec.distributed.num_workers} workers, but mpiexec started {comm.size} "
                                 f"rank(s); run `mpiexec -n {spec.distributed.num_workers} python -m launch run ...`")])
    import_deepspeed(spec.distributed.use_gpu)
    init_torch_distributed(comm, spec.distributed.comm_backend)
    run_dir, ds_config = prepare_run_dir(spec) if comm.rank == 0 else (None, None)
    run_dir, ds_config = comm.bcast((run_dir, ds_config), root=0)
    metrics = MetricsLog(str(run_dir)) if comm.rank == 0 else None
    checkpoints = DirectoryCheckpoints(run_dir / "checkpoints", rank=comm.rank, barrier=comm.Barrier,
                                       keep=spec.run.keep_checkpoints)
    started, error, worker = time.perf_counter(), None, None
    try:
        worker = Worker(worker_plan(spec, ds_config), rank=comm.rank, world_size=comm.size,
                        reporter=metrics, checkpoints=checkpoints)
        worker.run()
    except Exception as err:  # noqa: BLE001 - rank 0 must still write the summary
        failure = Failure.of(err, rank=comm.rank, step=worker.step if worker else None)
        if failure.errno not in STORAGE_ERRNOS:  # a full disk needs no traceback, a bug does
            traceback.print_exc()
        error = failure.describe()
    if comm.rank == 0:
        rows, info = metrics.snapshot()
        finish_run(run_dir, rows, info, wall_time_s=time.perf_counter() - started, error=error)
        return run_dir
    if error:
        # The others may be blocked in a collective with this rank: end the job, after a
        # grace period in which rank 0 (failing too, typically) writes its summary.
        time.sleep(5)
        comm.Abort(1)
    return None


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
            write_atomic(self.root / "latest.json", json.dumps({"step": step, "folder": folder.name}) + "\n")
            for old in sorted(self.root.glob("step_*"))[:-self.keep]:
                shutil.rmtree(old)

    @contextlib.contextmanager
    def latest(self):
        # An mpiexec job is not restarted by a supervisor: it always starts fresh.
        yield None

    def earlier(self, latest: Path) -> list[Path]:
        """The complete checkpoints before `latest`, newest first (incomplete ones: see
        trainers/checkpoint.py)."""
        steps = {folder: sealed_step(folder) for folder in self.root.glob("step_*") if folder != Path(latest)}
        return sorted((folder for folder, step in steps.items() if step is not None), key=steps.get, reverse=True)
