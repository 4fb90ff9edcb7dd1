"""The mpiexec launcher (`distributed.launcher: mpi`), for clusters whose jobs start
under an MPI launcher rather than Ray:

    mpiexec -n 2 python -m launch run configs/compression_mpi.yaml

Every rank runs this; ranks are discovered through MPI. Rank 0 owns the run directory
(same files as the Ray launcher) and broadcasts its path; the worker loop is the same.
"""
import os
import socket
import time
import traceback

from launch.errors import Problem, SpecError
from launch.spec import JobSpec


def launched_by_mpiexec() -> bool:
    return any(var in os.environ for var in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK"))


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


def run_mpi_job(spec: JobSpec) -> None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    if comm.size != spec.distributed.num_workers:
        raise SpecError([Problem("distributed.num_workers",
                                 f"{spec.distributed.num_workers} workers, but mpiexec started {comm.size} "
                                 f"rank(s); run `mpiexec -n {spec.distributed.num_workers} python -m launch run ...`")])
    from launch.job import finish_run, prepare_run_dir, worker_plan
    from launch.recorder import MetricsLog
    from launch.workers import DirectoryCheckpoints
    from trainers.loop import Worker, import_deepspeed

    import_deepspeed(spec.distributed.use_gpu)
    init_torch_distributed(comm, spec.distributed.comm_backend)
    run_dir, ds_config = prepare_run_dir(spec) if comm.rank == 0 else (None, None)
    run_dir, ds_config = comm.bcast((run_dir, ds_config), root=0)
    metrics = MetricsLog(str(run_dir)) if comm.rank == 0 else None
    checkpoints = DirectoryCheckpoints(run_dir / "checkpoints", rank=comm.rank, barrier=comm.Barrier,
                                       keep=spec.run.keep_checkpoints)
    started, error = time.perf_counter(), None
    try:
        Worker(worker_plan(spec, ds_config), rank=comm.rank, world_size=comm.size,
               reporter=metrics, checkpoints=checkpoints).run()
    except Exception as err:  # noqa: BLE001 - rank 0 must still write the summary
        traceback.print_exc()
        error = f"rank {comm.rank}: {type(err).__name__}: {err}"
    if comm.rank == 0:
        rows, info = metrics.snapshot()
        finish_run(run_dir, rows, info, wall_time_s=time.perf_counter() - started, error=error)
    elif error:
        # The others may be blocked in a collective with this rank: end the job, after a
        # grace period in which rank 0 (failing too, typically) writes its summary.
        time.sleep(5)
        comm.Abort(1)
