"""The mpiexec launcher (`distributed.launcher: mpi`), for clusters whose jobs start
under an MPI launcher rather than Ray:

    mpiexec -n 2 python -m launch run configs/compression_mpi.yaml

Every rank runs this; ranks are discovered through MPI. Rank 0 owns the run directory
(same files as the Ray launcher) and broadcasts its path; the worker loop is the same.
Checkpoints are folders under `<run_dir>/checkpoints/` finished by a `latest.json` marker.
A stop signal (mpiexec forwards SIGINT/SIGTERM to every rank) ends the job at the end of a
step, on every rank alike, as `interrupted`; `mpiexec -n W python -m launch resume RUN_DIR`
continues it from the checkpoint `latest.json` names.
Nothing here imports Ray (or matplotlib, until rank 0 writes the report at the end).
"""
import contextlib
import json
import os
import shutil
import socket
import time
import traceback
from dataclasses import replace
from pathlib import Path

from distrib import rendezvous
from launch.backends.interrupts import Interrupted, StopRequest, say_how_to_resume, signals_noted
from launch.backends.plan import worker_plan
from launch.runs.directory import finish_run, prepare_run_dir
from launch.runs.failures import STORAGE_ERRNOS, Failure
from launch.runs.files import read_json, write_atomic
from launch.runs.recorder import MetricsLog
from launch.spec.problems import Problem, SpecError
from launch.spec.schema import JobSpec
from trainers.checkpoint import sealed_step
from trainers.contracts import PerturbationRounds
from trainers.loop import Worker, import_deepspeed


def init_torch_distributed(comm, backend: str) -> None:
    """torch.distributed for DeepSpeed from MPI facts: rank 0 serves the rendezvous store on
    loopback when every rank is on one host (else on rank 0's address, or MASTER_ADDR if
    set), listening on that address only, on a free port it broadcasts."""
    hosts = comm.allgather(socket.gethostname())
    one_host = len(set(hosts)) == 1
    if one_host:
        rendezvous.use_loopback_interfaces()  # gloo's own connections too
    if comm.rank == 0:
        address = rendezvous.LOOPBACK if one_host else (
            os.environ.get("MASTER_ADDR") or socket.gethostbyname(socket.gethostname()))
        address, port = rendezvous.serve_store(address)
    else:
        address = port = None
    address, port = comm.bcast((address, port), root=0)
    os.environ.update(RANK=str(comm.rank), WORLD_SIZE=str(comm.size),
                      LOCAL_RANK=str(hosts[:comm.rank].count(hosts[comm.rank])))
    rendezvous.join_process_group(backend, rank=comm.rank, world_size=comm.size, address=address, port=port)
    import deepspeed

    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)  # takes the group above


def run_mpi_job(spec: JobSpec, *, resume: Path | None = None) -> Path | None:
    """Run this rank's part of the job (or resume the run in `resume`); rank 0 returns the
    run directory."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if comm.size != spec.distributed.num_workers:
        raise SpecError([Problem("distributed.num_workers",
                                 f"{spec.distributed.num_workers} workers, but mpiexec started {comm.size} "
                                 f"rank(s); run `mpiexec -n {spec.distributed.num_workers} python -m launch run ...`")])
    import_deepspeed(spec.distributed.use_gpu)
    init_torch_distributed(comm, spec.distributed.comm_backend)
    run_dir, ds_config = prepare_run_dir(spec, resume) if comm.rank == 0 else (None, None)
    run_dir, ds_config = comm.bcast((run_dir, ds_config), root=0)
    metrics = MetricsLog(str(run_dir), resume=resume is not None) if comm.rank == 0 else None
    checkpoints = DirectoryCheckpoints(run_dir / "checkpoints", rank=comm.rank, barrier=comm.Barrier,
                                       keep=spec.run.keep_checkpoints, resume=resume is not None)
    started, error, worker = time.perf_counter(), None, None
    with signals_noted() as stop:
        plan = worker_plan(spec, ds_config)
        plan = replace(plan, rounds=StopAtSignal(plan.rounds, stop, comm))
        try:
            worker = Worker(plan, rank=comm.rank, world_size=comm.size, reporter=metrics, checkpoints=checkpoints)
            worker.run()
        except Interrupted as interrupted:
            if comm.rank == 0:
                rows, info = metrics.snapshot()
                finish_run(run_dir, rows, info, wall_time_s=time.perf_counter() - started, error=None,
                           interrupted=True)
                say_how_to_resume(run_dir, interrupted, mpi_ranks=comm.size)
            raise SystemExit(interrupted.exit_status) from None
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


class StopAtSignal:
    """The plan's rounds, and after every step the ranks' agreement on a stop signal (one
    small MPI all-reduce): when any rank received one, every rank raises Interrupted after
    the same step, none inside a collective."""

    def __init__(self, rounds: PerturbationRounds, stop: StopRequest, comm):
        self.rounds, self.stop, self.comm = rounds, stop, comm

    def begin(self, worker: Worker) -> int:
        return self.rounds.begin(worker)

    def is_round(self, step: int) -> bool:
        return self.rounds.is_round(step)

    def after_step(self, worker: Worker, scores_P, bytes_report) -> None:
        self.rounds.after_step(worker, scores_P, bytes_report)
        from mpi4py import MPI

        signum = self.comm.allreduce(self.stop.signum, op=MPI.MAX)
        if signum:
            raise Interrupted(signum)


class DirectoryCheckpoints:
    """`<root>/step_00000100/` per checkpoint; `<root>/latest.json` names the newest
    complete one (written by rank 0 after every rank has written its files), and only the
    newest `keep` folders are kept. `resume`: the run is resumed, from the checkpoint
    `latest.json` names."""

    def __init__(self, root: Path, *, rank: int, barrier, keep: int, resume: bool = False):
        self.root, self.rank, self.barrier, self.keep, self.resume = root, rank, barrier, keep, resume

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
        # An mpiexec job is not restarted by a supervisor: it starts fresh, unless resumed.
        marker = read_json(self.root / "latest.json") if self.resume else {}
        yield self.root / marker["folder"] if marker.get("folder") else None

    def earlier(self, latest: Path) -> list[Path]:
        """The complete checkpoints before `latest`, newest first (incomplete ones: see
        trainers/checkpoint.py)."""
        steps = {folder: sealed_step(folder) for folder in self.root.glob("step_*") if folder != Path(latest)}
        return sorted((folder for folder, step in steps.items() if step is not None), key=steps.get, reverse=True)
