"""What every Ray flavour of a job shares: joining or starting Ray, checking that the
cluster can hold the job, the run's recorder actor, a TorchTrainer for one worker group,
the worker's reporter and checkpoint store, and `run_on_ray`, one start-up and one
wind-down around a flavour's own fit."""
import contextlib
import importlib
import os
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ray

from distrib.rendezvous import LOOPBACK, use_loopback_interfaces
from launch.backends.interrupts import Interrupted, run_in_thread, say_how_to_resume, signals_raise_interrupted
from launch.runs.directory import finish_run, prepare_run_dir
from launch.runs.failures import Failure
from launch.runs.files import METRICS, read_metrics
from launch.runs.recorder import MetricsLog
from launch.spec.problems import Problem, SpecError
from launch.spec.schema import JobSpec
from pbt.ray.private_api import (HEALTH_CHECK_INTERVAL_ENV, PREEMPTION_WATCHER_ENV, last_recorded_cluster,
                                 leave_ray, quiet_ray_train_worker_logs, ray_on_loopback_only)
from trainers.loop import Worker

# The Ray launchers run the metric log as an actor on the driver's node, so that rank 0 can
# log from any node of a cluster.
RunRecorder = ray.remote(num_cpus=0)(MetricsLog)
RECORDER_NAME = "sparsepop-recorder"  # in the job's own namespace: one per driver


@dataclass(frozen=True)
class RayRun:
    """A started run: what a flavour's fit needs."""

    spec: JobSpec
    run_dir: Path
    ds_config: dict
    recorder: object  # a RunRecorder actor handle
    resuming: bool = False  # `launch resume`: the run directory holds an earlier driver's run


def run_on_ray(spec: JobSpec, fit: Callable[[RayRun], str | None], *,
               preflight: Callable[[], None] = lambda: None, resume: Path | None = None) -> Path:
    """Join Ray, check the cluster (and the flavour's `preflight`) before anything is
    written, create the run directory (or reopen `resume`'s) and its recorder, run `fit` (it
    returns the error that ended training, or None), and write the summary and report
    whatever happened, leaving Ray meanwhile. A stop signal ends the run as `interrupted` (see interrupts.py): Ray
    is left (which ends the job's workers), the summary written, and the process exits with
    128 + the signal's number. Returns the run directory; raises SpecError on input the
    cluster cannot satisfy."""
    connect_ray()
    check_resources(spec)
    preflight()
    run_dir, ds_config = prepare_run_dir(spec, resume)
    run = RayRun(spec, run_dir, ds_config, start_recorder(run_dir, resume=resume is not None), resume is not None)
    started = time.perf_counter()
    # The driver only waits while the workers train: import the report's matplotlib now
    # rather than after training (half a second before the summary is printed).
    threading.Thread(target=importlib.import_module, args=("launch.runs.report",), name="import-report",
                     daemon=True).start()
    with signals_raise_interrupted():
        try:
            try:
                error = run_in_thread(lambda: fit(run))
            except Exception as err:  # noqa: BLE001 - the summary must be written whatever failed
                error = f"{type(err).__name__}: {err}"
            rows, info = ray.get(run.recorder.snapshot.remote())
        except Interrupted as interrupted:
            wind_down_interrupted(run, interrupted, wall_time_s=time.perf_counter() - started)
    rows = sorted(rows, key=lambda row: (row["step"], row["member"]))  # groups' and trials' rows interleave
    # Nothing below needs Ray, and leaving it waits for its processes to end (a local
    # instance's, about half a second): let them end while the summary and the report are written.
    leaving = threading.Thread(target=leave_ray, name="leave-ray")
    leaving.start()
    try:
        finish_run(run_dir, rows, info, wall_time_s=time.perf_counter() - started, error=error)
    finally:
        leaving.join()
    return run_dir


def wind_down_interrupted(run: RayRun, interrupted: Interrupted, *, wall_time_s: float) -> None:
    """Leave Ray first, so that no worker trains or checkpoints on: a local instance ends
    with its processes, and a job's actors end with their driver on a cluster. The rows are
    then read back from metrics.jsonl (the recorder is gone); they may reach past the last
    checkpoint, which `launch resume` rewinds to. Exits with the signal's status."""
    _, info = ray.get(run.recorder.snapshot.remote())
    # Not leave_ray: the fit thread may still be inside Ray here, and a driver that exited a
    # second sooner died of SIGSEGV at exit in 3 of 8 interrupted runs (0 of 6 with this).
    ray.shutdown()
    rows = sorted(read_metrics(run.run_dir / METRICS), key=lambda row: (row["step"], row["member"]))
    finish_run(run.run_dir, rows, info, wall_time_s=wall_time_s, error=None, interrupted=True)
    say_how_to_resume(run.run_dir, interrupted)
    raise SystemExit(interrupted.exit_status)


def connect_ray() -> None:
    """Join the cluster this process belongs to (RAY_ADDRESS, set under `ray job submit`,
    or a head started with `ray start` on this machine, if it answers); otherwise start a
    local instance.
    RAY_ADDRESS=local always starts a fresh local instance (the tests use it)."""
    if ray.is_initialized():
        return
    # Ray Train hands it on from this process to its controller (and a local instance's
    # processes, Tune's trials among them, inherit it).
    os.environ.setdefault(HEALTH_CHECK_INTERVAL_ENV, "0.5")
    address = os.environ.get("RAY_ADDRESS", "auto")
    detected = address == "auto"
    if detected:
        address = joinable_cluster() or "local"
    if address != "local":
        try:
            ray.init(address=address, logging_level="WARNING")
            return
        except ConnectionError:
            if not detected:
                raise
    # Everything Ray starts listens on 127.0.0.1 (docs/scaling.md), the dashboard included
    # (it serves Ray's state API, which Ray Train polls), and so do the workers' process groups.
    ray_on_loopback_only()
    use_loopback_interfaces()
    ray.init(address="local", dashboard_host=LOOPBACK, logging_level="WARNING")
    os.environ.setdefault(PREEMPTION_WATCHER_ENV, "0")  # nothing to preempt here (see pbt/ray/private_api.py)


def joinable_cluster(timeout_s: float = 2.0) -> str | None:
    """The cluster `address="auto"` would join, if it answers. A head that died without
    `ray stop` leaves its address in Ray's temp dir, and `ray.init("auto")` then retries
    that dead address for minutes instead of failing. A head on loopback is joined in Ray's
    single-machine mode, as it was started (see pbt/ray/private_api.py: ray_on_loopback_only)."""
    address = last_recorded_cluster()
    if address is None:
        return None
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError:
        print(f"note: the last Ray cluster on this machine ({address}) does not answer; "
              "starting a local Ray instance for this job", file=sys.stderr)
        return None
    if host in ("127.0.0.1", "localhost", "::1"):
        ray_on_loopback_only()
    return address


def check_resources(spec: JobSpec) -> None:
    """Fail fast instead of leaving a job waiting forever for workers that cannot fit."""
    cluster = ray.cluster_resources()
    # Several groups train at once, each with its own num_workers workers.
    groups = spec.population.groups
    workers = spec.distributed.num_workers * groups
    count = f"{groups} groups × {spec.distributed.num_workers} workers" if groups > 1 else f"{workers} workers"
    problems = []
    for resource, amount in spec.distributed.worker_resources().items():
        need, have = workers * amount, cluster.get(resource, 0.0)
        if need > have:
            problems.append(Problem(
                "distributed.num_workers",
                f"{count} × {amount:g} {resource} = {need:g} {resource}, but the Ray cluster has "
                f"{have:g} {resource}; lower distributed.num_workers / resources_per_worker"
                + (" / population.groups" if groups > 1 else "") + " or add nodes"))
    if problems:
        raise SpecError(problems)


def on_this_node():
    """A scheduling strategy that keeps an actor or task on the driver's node (beside the
    run directory it writes)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)


def start_recorder(run_dir: Path, *, resume: bool = False):
    """The run's RunRecorder actor, pinned to this node (it writes the run directory), so
    that rank 0 may log from any node."""
    return RunRecorder.options(name=RECORDER_NAME, scheduling_strategy=on_this_node()).remote(str(run_dir),
                                                                                             resume=resume)


def ray_trainer(spec: JobSpec, loop_config: dict, *, run_dir: Path, name: str = "checkpoints"):
    """A TorchTrainer of distributed.num_workers workers running `ray_train_worker` with
    `loop_config`, keeping its checkpoints in run_dir/name."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from launch.backends.ray_rendezvous import BoundTorchConfig

    return TorchTrainer(
        ray_train_worker,
        train_loop_config=loop_config,
        torch_config=BoundTorchConfig(backend=spec.distributed.comm_backend),  # its store on the node's address
        scaling_config=ScalingConfig(num_workers=spec.distributed.num_workers, use_gpu=spec.distributed.use_gpu,
                                     resources_per_worker=spec.distributed.worker_resources()),
        run_config=RunConfig(name=name, storage_path=str(run_dir),
                             failure_config=FailureConfig(max_failures=spec.run.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=spec.run.keep_checkpoints)),
    )


def fit_error(trainer, recorder) -> str | None:
    """Run a TorchTrainer to its end; the error that ended it, or None. The recorder's
    failures (launch/runs/failures.py) say it best: the failing rank, step and error, or
    why restarting stopped (the workers of the attempt after that return at once, so the
    fit itself ends without error then)."""
    try:
        trainer.fit()
    except Exception as err:  # noqa: BLE001 - reported in the summary, never lost
        return ray.get(recorder.failure_error.remote()) or f"{type(err).__name__}: {err}"
    return ray.get(recorder.stop_reason.remote())


# ---------------------------------------------------------------- inside a Ray Train worker


def ray_train_worker(config: dict) -> None:
    """Ray Train's `train_loop_per_worker`, for every Ray flavour: `config = {"plan":
    WorkerPlan, "reporter": Reporter, "checkpoints": CheckpointStore}`, built by the
    flavour's driver. Ray ships the config as one object, so parts that share an object on
    the driver (a Tune trial's rounds and its checkpoints) still share it here."""
    import ray.train
    import torch.distributed

    quiet_ray_train_worker_logs()
    context = ray.train.get_context()
    rank, recorder = context.get_world_rank(), config["reporter"].recorder
    # Rank 0's answer for all (Ray Train set the process group up): a rank that returned
    # would leave the others waiting in their first collective.
    stop = [ray.get(recorder.stop_reason.remote()) if rank == 0 else None]
    torch.distributed.broadcast_object_list(stop, src=0)
    if stop[0] is not None:
        return  # restarting stopped (launch/runs/failures.py): the driver reports why
    worker = None
    try:
        worker = Worker(config["plan"], rank=rank, world_size=context.get_world_size(),
                        reporter=config["reporter"], checkpoints=config["checkpoints"])
        worker.run()
    except Exception as err:
        # Recorded before Ray Train hears of it, so that its restart sees whether to go on.
        ray.get(recorder.record_failure.remote(Failure.of(err, rank=rank, step=worker.step if worker else None)))
        raise


class ActorReporter:
    """Calls to the RunRecorder actor (Ray keeps their order), fire-and-forget, except that
    a call that failed (the recorder could not write: a full disk) raises its error in the
    worker at the next call, which stops the worker."""

    def __init__(self, recorder):
        self.recorder = recorder
        self.pending = None  # the last call's result

    def _call(self, method, *args, **kwargs) -> None:
        if self.pending is not None:
            try:
                ray.get(self.pending)
            except ray.exceptions.RayTaskError as err:
                raise err.cause from None  # the recorder's OSError, without Ray's wrapping
        self.pending = method.remote(*args, **kwargs)

    def log(self, rows):
        self._call(self.recorder.log, rows)

    def log_events(self, lines):
        self._call(self.recorder.log_events, lines)

    def rewind(self, step):
        self._call(self.recorder.rewind, step)

    def set_info(self, **info):
        self._call(self.recorder.set_info, **info)


class RayTrainCheckpoints:
    """Checkpoints through `ray.train.report`; Ray Train restores the latest one into a
    restarted worker group."""

    def save(self, step: int, write_files) -> None:
        import ray.train

        # Ray copies the files into run_dir/<name>/checkpoint_<time>/ in no set order and
        # without fsync; the workers' seals tell a complete copy (trainers/checkpoint.py).
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

    def earlier(self, latest: Path) -> list[Path]:
        """The other checkpoints Ray Train keeps (run.keep_checkpoints), newest first."""
        import ray.train

        reported = ray.train.get_all_reported_checkpoints(
            consistency_mode=ray.train.CheckpointConsistencyMode.COMMITTED, timeout_s=60)
        order = sorted(range(len(reported)), key=lambda i: (reported[i].metrics.get("step", -1), i), reverse=True)
        return [Path(reported[i].checkpoint.path) for i in order if Path(reported[i].checkpoint.path) != Path(latest)]
