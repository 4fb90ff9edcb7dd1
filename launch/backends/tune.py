"""`population.backend: tune`: Ray Tune's PopulationBasedTraining across trials.

Each Tune trial is one member: a plain model (P = 1) with the trial's hyperparameters,
trained by a Ray Train job of distributed.num_workers DeepSpeed workers. The trial is a
function trainable that runs the `TorchTrainer` itself, one `fit()` per round of
`perturbation_interval` steps, and hands each round's last checkpoint to Tune
(`tune.report(..., checkpoint=)`). Why this shape: in Ray Train V2 a `TorchTrainer` is no
longer a Tune trainable, and its `TuneReportCallback` forwards a checkpoint's *path* as a
metric, not a Tune checkpoint, so PBT could neither clone a donor nor restart a trial from
one. With rounds, Tune's decision point is exactly a checkpoint, synchronous PBT works as
is, and an exploit is a plain restart: the next round restores the checkpoint Tune gives
(the donor's), then applies the trial's new hyperparameters (`TrialHyperparams`: the
restored optimizer state must not bring back the donor's learning rate). Cost: every round starts a new worker group (seconds), so rounds
should be long.

Run directory (beside the files of launch/runs/files.py):
  tune/              Tune's experiment: member<NN>/ per trial (its checkpoints), pbt_global.txt,
                     pbt_policy_*.txt (Ray's own exploit logs)
  pbt_events.jsonl   every exploit as a pbt.events.Event; members are trial indices
  restores.jsonl     what a member held right after each restore: weights digest, hyperparameters,
                     the learning rate read back from its optimizer
  rounds/            the Ray Train runs of rounds in flight (removed when reported, and at the end)
"""
import contextlib
import math
import shutil
import uuid
from dataclasses import replace
from pathlib import Path

import ray
import ray.train
import torch
from ray import tune

from launch.backends.plan import population_controller, worker_plan
from launch.backends.ray_session import (RECORDER_NAME, ActorReporter, RayRun, RayTrainCheckpoints, ray_trainer,
                                         run_on_ray)
from launch.spec.problems import Problem, SpecError
from launch.spec.schema import JobSpec
from pbt.hyperparams import HyperparamStore
from pbt.ray.tune_scheduler import build_scheduler, param_space
from pbt.tune_mapping import MEMBER_KEY, TIME_ATTR, trial_hyperparams
from trainers.loop import Worker, WorkerPlan, replica_digest, say

TRIAL_MEMORY_BYTES = 256 * 2**20  # a trial's own process: Ray, torch, a TorchTrainer's driver

# ---------------------------------------------------------------- inside a trial's workers


class TrialReporter(ActorReporter):
    """Rows in the run's numbering (member = the trial's index); a restart rewinds only
    this member's rows. The driver records the population's size and initial values."""

    def __init__(self, recorder, member: int):
        super().__init__(recorder)
        self.member = member

    def log(self, rows):
        super().log([{**row, "member": self.member} for row in rows])

    def log_restores(self, records):
        self._call(self.recorder.log_restores, [{**record, "member": self.member} for record in records])

    def rewind(self, step):
        self._call(self.recorder.rewind, step, [self.member])

    def set_info(self, **info):
        super().set_info(**{k: v for k, v in info.items() if k not in ("members", "initial_hyperparams")})


class TrialRounds:
    """A member's rounds (trainers.contracts.PerturbationRounds): Tune decides exploits
    between runs, so a run stops at the end of its round of `round_steps`, and the loop only
    keeps the score the round's checkpoint carries to Tune. Rank 0 logs what a restore
    brought in."""

    def __init__(self, round_steps: int):
        self.round_steps = round_steps
        self.score_P = torch.tensor([math.nan])

    @property
    def score(self) -> float:
        """The member's last score, read on the host (at a checkpoint)."""
        return float(self.score_P[0])

    def begin(self, worker: Worker) -> int:
        # Checkpoints are taken after a step, so step 0 means nothing was restored.
        if worker.step > 0 and worker.reporter is not None:  # a TrialReporter
            worker.reporter.log_restores([{
                "step": worker.step, "weights_digest": float(replica_digest(worker.engine.module)[0]),
                "hyperparams": worker.population.member_hyperparams(0),
                "lr": float(worker.optimizer.param_groups[0]["lr_P"][0])}])
        return min(worker.plan.train.steps, (worker.step // self.round_steps + 1) * self.round_steps)

    def is_round(self, step: int) -> bool:
        return step % self.round_steps == 0

    def after_step(self, worker: Worker, scores_P, bytes_report) -> None:
        self.score_P = scores_P  # read at the round's checkpoint only (a host read per step otherwise)


class TrialHyperparams(HyperparamStore):
    """The hyperparameters Tune gave the trial. They rule over a restored checkpoint's,
    which after an exploit are the donor's."""

    def load_state_dict(self, state) -> None:
        pass


class TrialCheckpoints(RayTrainCheckpoints):
    """A round starts from the checkpoint Tune gave the trial (its own, or a donor's after an
    exploit), unless Ray Train restarted the round's workers (then from the round's latest).
    Every checkpoint carries the member's score, which the trial reports to Tune."""

    def __init__(self, restore_from: str | None, metric: str, rounds: TrialRounds):
        self.restore_from, self.metric, self.rounds = restore_from, metric, rounds

    def metrics(self, step: int) -> dict:
        return {"step": step, self.metric: self.rounds.score}

    @contextlib.contextmanager
    def latest(self):
        if ray.train.get_checkpoint() is not None:
            with super().latest() as folder:
                yield folder
        else:
            yield self.restore_from


# ---------------------------------------------------------------- a trial


def trial_plan(spec: JobSpec, ds_config: dict, *, member: int, hyperparams: dict[str, float]) -> WorkerPlan:
    """One member as a plain model with the trial's hyperparameters, run in rounds of
    perturbation_interval steps. Its own seed: its own initial weights and data order."""
    return replace(worker_plan(spec, ds_config), seed=spec.seed + member, members=1,
                   population=TrialHyperparams(1, hyperparams),
                   rounds=TrialRounds(spec.population.pbt.perturbation_interval))


def member_trial(config: dict, *, spec: JobSpec, ds_config: dict, recorder, rounds_dir: str, keep: int) -> None:
    """Tune's function trainable: rounds until train.steps, each reported with its checkpoint,
    of which the newest `keep` stay on disk. run.storage is on storage every node mounts, so
    workers read checkpoints in place."""
    member, metric = config[MEMBER_KEY], spec.population.pbt.metric
    plan = trial_plan(spec, ds_config, member=member, hyperparams=trial_hyperparams(config))
    while True:
        checkpoint = tune.get_checkpoint()  # after a report: the one just reported
        trainer = ray_trainer(spec, {
            "plan": plan, "reporter": TrialReporter(recorder, member),
            "checkpoints": TrialCheckpoints(checkpoint.path if checkpoint else None, metric, plan.rounds),
        }, run_dir=Path(rounds_dir), name=f"{_member_name(config)}-{uuid.uuid4().hex[:8]}")
        result = trainer.fit()
        stop = ray.get(recorder.stop_reason.remote())
        if stop is not None:  # the round's workers stopped restarting (launch/runs/failures.py)
            raise RuntimeError(stop)
        step = result.metrics["step"]
        tune.report({TIME_ATTR: step, metric: result.metrics[metric]},
                    checkpoint=tune.Checkpoint(result.checkpoint.path))
        shutil.rmtree(result.path, ignore_errors=True)  # Tune keeps its own copy
        prune_checkpoints(Path(tune.get_checkpoint().path).parent, keep)
        if step >= spec.train.steps:
            return


def prune_checkpoints(trial_dir: Path, keep: int) -> None:
    """Remove all but the newest `keep` of a trial's checkpoints (`checkpoint_NNNNNN`, numbered
    in the order the trial wrote them). Tune's own num_to_keep cannot be used: when PBT
    compares a running trial that is among the best, it asks the trial to save, and a function
    trainable answers with the checkpoint it just reported, which Tune then registers a second
    time. Tune so counts such a checkpoint twice: it keeps half as many as asked (a donor's
    may go before the trial that cloned it restores it), and, having deleted the folder for
    one entry, logs `ERROR ... Error handling checkpoint ... FileNotFoundError` for the other."""
    for old in sorted(trial_dir.glob("checkpoint_*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- the driver


def concurrent_trials(spec: JobSpec) -> int:
    """As many trials at a time as the cluster holds worker groups: more would start
    TorchTrainers that wait for each other's workers."""
    cluster, per_worker = ray.cluster_resources(), spec.distributed.worker_resources()
    workers = spec.distributed.num_workers
    fits = min(int(cluster.get(name, 0.0) // (workers * amount)) for name, amount in per_worker.items())
    return max(1, min(fits, spec.population.size))


def check_synch_fits(spec: JobSpec, concurrent: int) -> None:
    """Ray's synchronous PBT waits at a perturbation step only for the trials already
    started: with fewer at a time than members, the first batch would run to the end as a
    population of its own, never compared with the rest."""
    size = spec.population.size
    if spec.population.pbt.synch and concurrent < size:
        raise SpecError([Problem("population.pbt.synch", (
            f"synchronous PBT needs all {size} trials running at once, but the cluster holds {concurrent} "
            f"worker group(s) of {spec.distributed.num_workers} × {spec.distributed.worker_resources()}; "
            "use synch: false, lower population.size or distributed.resources_per_worker, or add nodes"))])


def checkpoints_to_keep(spec: JobSpec, concurrent: int) -> int:
    """A donor's checkpoint must outlive the wait of the trial that cloned it: up to one
    round per batch of trials run before it (ceil(P / concurrent)), plus the one in flight."""
    return max(spec.run.keep_checkpoints, math.ceil(spec.population.size / concurrent) + 2)


def _member_name(config: dict) -> str:
    return f"member{config[MEMBER_KEY]:02d}"


def _trial_name(trial) -> str:
    return _member_name(trial.config)


class EventLogger:
    """The scheduler's `on_event`: an exploit to the run's recorder, found by its name when
    called. Tune pickles the scheduler with its experiment, and a restored experiment
    (`launch resume`) must reach the new driver's recorder, not the one it was pickled with."""

    def __call__(self, event) -> None:
        ray.get_actor(RECORDER_NAME).log_events.remote([event.to_json()])
        say(f"[pbt] step {event.step}: member {event.target} <- member {event.source}; "
            + event.explored())


def run_tune_job(spec: JobSpec, *, resume: Path | None = None) -> Path:
    """Run the population as Ray Tune trials to completion (or resume the run in `resume`);
    returns the run directory."""
    def fit(run: RayRun) -> str | None:
        concurrent = concurrent_trials(spec)
        initial = population_controller(spec).initial  # the vectorized backend's draw, for the same seed
        run.recorder.set_info.remote(members=spec.population.size, initial_hyperparams=initial)
        # The trial process only orchestrates: its workers hold the CPUs/GPUs. Tune refuses a trial
        # that requests nothing, so it asks for (some of) the memory it really uses.
        trainable = tune.with_resources(
            tune.with_parameters(member_trial, spec=spec, ds_config=run.ds_config, recorder=run.recorder,
                                 rounds_dir=str(run.run_dir / "rounds"), keep=checkpoints_to_keep(spec, concurrent)),
            {"cpu": 0, "memory": TRIAL_MEMORY_BYTES})
        if run.resuming:
            # Ray's own experiment restore: every unfinished trial continues from the last checkpoint
            # Tune recorded for it, with the scheduler and run config the experiment was started with.
            tuner = tune.Tuner.restore(str(run.run_dir / "tune"), trainable, resume_unfinished=True,
                                       resume_errored=True)
        else:
            tuner = new_tuner(spec, trainable, initial, concurrent, run.run_dir)
        print(f"Ray Tune PBT: {spec.population.size} trials of {spec.distributed.num_workers} worker(s), "
              f"{concurrent} at a time; Tune's experiment directory {run.run_dir / 'tune'}", flush=True)
        try:
            failed = [f"{_member_name(r.config)}: {r.error}" for r in tuner.fit() if r.error is not None]
        finally:
            shutil.rmtree(run.run_dir / "rounds", ignore_errors=True)
        return "; ".join(failed) or None

    return run_on_ray(spec, fit, preflight=lambda: check_synch_fits(spec, concurrent_trials(spec)), resume=resume)


def new_tuner(spec: JobSpec, trainable, initial: dict, concurrent: int, run_dir: Path) -> tune.Tuner:
    """A new Tune experiment of the population's trials in run_dir/tune."""
    return tune.Tuner(
        trainable, param_space=param_space(initial),
        tune_config=tune.TuneConfig(scheduler=build_scheduler(spec.population.pbt, on_event=EventLogger()),
                                    max_concurrent_trials=concurrent, trial_name_creator=_trial_name,
                                    trial_dirname_creator=_trial_name),
        # Worker failures are retried inside each round (run.max_failures); a trial whose round
        # still fails stops, and the run reports it. `stop` ends a trial at its last step before
        # PBT sees that result (no exploit of a finished member, no paused trial to resume).
        # Tune deletes no checkpoint: the trials prune their own (see prune_checkpoints).
        run_config=tune.RunConfig(name="tune", storage_path=str(run_dir), verbose=0,
                                  stop={TIME_ATTR: spec.train.steps},
                                  failure_config=tune.FailureConfig(max_failures=0)))
