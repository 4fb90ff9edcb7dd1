"""Turn a validated spec into a run directory and a Ray Train job (the mpiexec launcher
is in launch/mpi_job.py and shares the run-directory parts).

Run directory (absolute path printed at start and end):
  spec.yaml         the resolved spec          ds_config.json   DeepSpeed's config
  metrics.jsonl     one row per logged step and member (written by the recorder)
  summary.json      final figures              checkpoints/     Ray Train checkpoints
  pbt_events.jsonl  every exploit/explore      report.md + PNGs a person's view of it all
"""
import json
import os
import socket
import sys
import time
from datetime import datetime
from pathlib import Path

from launch.deepspeed_config import build_deepspeed_config
from launch.errors import Problem, SpecError
from launch.recorder import write_atomic
from launch.report import write_report
from launch.spec import JobSpec
from launch.summary import summarize
from pbt.controller import PBTController
from pbt.hyperparams import HyperparamStore
from trainers.loop import WorkerPlan
from trainers.rounds import NO_ROUNDS, LocalRounds


def connect_ray() -> None:
    """Join the cluster this process belongs to (RAY_ADDRESS, set under `ray job submit`,
    or a head started with `ray start` on this machine, if it answers); otherwise start a
    local instance.
    RAY_ADDRESS=local always starts a fresh local instance (the tests use it)."""
    import ray

    if ray.is_initialized():
        return
    address = os.environ.get("RAY_ADDRESS", "auto")
    if address == "auto" and not last_cluster_answers():
        address = "local"
    if address != "local":
        try:
            ray.init(address=address, logging_level="WARNING")
            return
        except ConnectionError:
            if address != "auto":
                raise
    # The dashboard serves Ray's state API, which Ray Train polls; keep it on loopback.
    ray.init(address="local", dashboard_host="127.0.0.1", logging_level="WARNING")


def last_cluster_answers(timeout_s: float = 2.0) -> bool:
    """Whether the cluster `address="auto"` would join is up. A head that died without
    `ray stop` leaves its address in Ray's temp dir, and `ray.init("auto")` then retries
    that dead address for minutes instead of failing."""
    from ray._private.services import canonicalize_bootstrap_address  # pinned Ray: how "auto" resolves

    try:
        address = canonicalize_bootstrap_address("auto")
    except ConnectionError:  # no cluster recorded and none running
        return False
    if address is None:
        return False
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except OSError:
        print(f"note: the last Ray cluster on this machine ({address}) does not answer; "
              "starting a local Ray instance for this job", file=sys.stderr)
        return False


def check_resources(spec: JobSpec) -> None:
    """Fail fast instead of leaving a job waiting forever for workers that cannot fit."""
    import ray

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


def fresh_dir(parent: Path, prefix: str) -> Path:
    """A new directory `parent/prefix-<time stamp>[-n]` (never one another job created)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1000):
        path = parent / (f"{prefix}-{stamp}" + (f"-{attempt}" if attempt else ""))
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"could not create a fresh directory under {parent}")


def make_run_dir(spec: JobSpec) -> Path:
    return fresh_dir(spec.storage_dir(), spec.name)


def population_controller(spec: JobSpec, members: int | None = None) -> HyperparamStore:
    """Members' hyperparameters: the spec's values, and PBT's draws for those it mutates
    (then the store is the PBTController that decides). `members`: default
    population.size (one group); the whole population's count for the coordinator of
    several groups."""
    defaults = {"lr": spec.train.lr, "weight_decay": spec.train.weight_decay,
                "warmup": spec.train.warmup_steps / spec.train.steps, "dropout": spec.model.dropout,
                "density": spec.compression.density}
    members = members or spec.population.size
    if spec.population.pbt is None:
        return HyperparamStore(members, defaults)
    return PBTController(spec.population.pbt, members=members, seed=spec.seed, defaults=defaults)


def worker_plan(spec: JobSpec, ds_config: dict) -> WorkerPlan:
    pbt = spec.population.pbt
    population = population_controller(spec)
    return WorkerPlan(seed=spec.seed, task=spec.task, model=spec.model, train=spec.train,
                      compression=spec.compression, members=spec.population.size, deepspeed_config=ds_config,
                      backend=spec.distributed.backend, checkpoint_interval=spec.run.checkpoint_interval,
                      use_gpu=spec.distributed.use_gpu, population=population,
                      rounds=LocalRounds(population) if pbt else NO_ROUNDS,
                      pbt_metric=pbt.metric if pbt else "val_loss")


def prepare_run_dir(spec: JobSpec) -> tuple[Path, dict]:
    """Create the run directory with spec.yaml and ds_config.json; returns (dir, DeepSpeed config)."""
    run_dir = make_run_dir(spec)
    print(f"run directory: {run_dir}", flush=True)
    ds_config = build_deepspeed_config(spec)
    write_atomic(run_dir / "spec.yaml", spec.to_yaml())
    write_atomic(run_dir / "ds_config.json", json.dumps(ds_config, indent=2) + "\n")
    return run_dir, ds_config


def finish_run(run_dir: Path, rows: list[dict], info: dict, *, wall_time_s: float, error: str | None) -> None:
    """Write summary.json whatever happened (results are never lost), print it, and exit
    non-zero if training failed."""
    summary = summarize(rows, info, wall_time_s=wall_time_s, status="failed" if error else "completed")
    if error:
        summary["error"] = error
    write_atomic(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    write_report(run_dir)
    print_summary(summary, run_dir)
    if error:
        print(f"error: training failed: {error}", file=sys.stderr)
        raise SystemExit(1)


def ray_trainer(spec: JobSpec, train_loop, loop_config: dict, *, run_dir: Path, name: str = "checkpoints"):
    """A TorchTrainer of distributed.num_workers workers keeping its checkpoints in run_dir/name."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    return TorchTrainer(
        train_loop,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend=spec.distributed.comm_backend),
        scaling_config=ScalingConfig(num_workers=spec.distributed.num_workers, use_gpu=spec.distributed.use_gpu,
                                     resources_per_worker=spec.distributed.worker_resources()),
        run_config=RunConfig(name=name, storage_path=str(run_dir),
                             failure_config=FailureConfig(max_failures=spec.run.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=spec.run.keep_checkpoints)),
    )


def start_recorder(run_dir: Path):
    """The run's RunRecorder actor, pinned to this node (it writes the run directory), so
    that rank 0 may log from any node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from launch.recorder import RunRecorder

    here = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=False)
    return RunRecorder.options(scheduling_strategy=here).remote(str(run_dir))


def run_ray_job(spec: JobSpec) -> Path:
    """Run the job on Ray Train to completion; returns its run directory. Raises
    SpecError on input the cluster cannot satisfy (before anything is written)."""
    if spec.population.groups > 1:
        from launch.group_job import run_group_job

        return run_group_job(spec)
    if spec.population.backend == "tune":
        from launch.tune_job import run_tune_job

        return run_tune_job(spec)
    import ray

    from launch.workers import ray_train_worker

    connect_ray()
    check_resources(spec)
    run_dir, ds_config = prepare_run_dir(spec)
    recorder = start_recorder(run_dir)
    trainer = ray_trainer(spec, ray_train_worker, {"plan": worker_plan(spec, ds_config), "recorder": recorder},
                          run_dir=run_dir)
    started = time.perf_counter()
    error = None
    try:
        trainer.fit()
    except Exception as err:  # noqa: BLE001 - the summary must be written whatever failed
        error = f"{type(err).__name__}: {err}"
    rows, info = ray.get(recorder.snapshot.remote())
    finish_run(run_dir, rows, info, wall_time_s=time.perf_counter() - started, error=error)
    return run_dir


def print_summary(summary: dict, run_dir: Path) -> None:
    fmt = lambda x: "n/a" if x is None else f"{x:.4f}"  # noqa: E731
    print(f"\n== {summary['status']}: {summary['steps']} steps in {summary['wall_time_s']:.1f} s wall, "
          f"{summary['train_time_s']:.1f} s training ({summary['tokens_per_s'] or 0:,.0f} tokens/s)")
    print(f"   validation loss: final {fmt(summary['final_val_loss'])}, best {fmt(summary['best_val_loss'])}"
          + (f"; unigram baseline {fmt(summary['unigram_baseline'])} (nats/token)"
             if summary["unigram_baseline"] is not None else "")
          + (f"; accuracy {summary['final_val_accuracy']:.3f}" if summary["final_val_accuracy"] is not None else ""))
    print(f"   run directory: {run_dir}", flush=True)
