"""A Ray job of several vectorized groups (population.groups = G > 1): G Ray Train worker
groups at once, one PopulationCoordinator for their global PBT rounds (launch/backends/coordinator.py).

Same run directory as one group, except the checkpoints: `checkpoints_g{g}/` per group.
Group g trains its members with seed `seed + g` (initial weights, data order, dropout), so
the groups' members differ as members of one group do (group 0 starts from the weights a
one-group run with the same seed would). The global controller draws the G·P members'
initial hyperparameters; each group's HyperparamStore holds its slice. `launch resume`
restarts every group from the newest step all of them checkpointed and rebuilds the
global controller from those checkpoints (launch/backends/groups_resume.py).

Legend: G groups, P members per group, W workers per group; global member id g·P + i
(pbt/groups.py).

A round (every perturbation_interval steps), on every worker of every group:
  1. `decide`: the group's scores (and its members' weight digests) go to the
     PopulationCoordinator, which waits until all G groups have reported the step (the
     barrier), runs the global PBTController over G·P members once, and answers every
     worker the same event list (global ids). A round already decided (a group replaying
     it after a restart) is answered from memory at once.
  2. exports: for each member another group copies, rank 0 sends the shared part of its
     state (weights, optimizer moments, step counters) and every rank r its own exchange
     residuals to the coordinator (Ray carries a large call argument through the object
     store), which puts each into the object store itself: the coordinator owns the
     objects, so they outlive the donor's processes for a target replaying the round after
     a restart (ray.put's `_owner` argument is gone since Ray 2.56).
  3. copies inside the group as with one group; then imports: each rank r of the target
     group takes the shared part and rank r's residuals of the donor (both groups have W
     workers): the sum over workers of the residuals, the gradient the workers still owe,
     moves with the weights, as within a group. Every rank loads the same shared object,
     so the replicas stay bit-identical.
  4. the targets take the events' new hyperparameters; rank 0 logs the events with the
     source's and the target's weight digests.
Steps 1-4 are the group's `GroupRounds`, the rounds of its workers' plan.
Exports never wait and imports only wait for exports, so no cycle can form. Every wait is
bounded by population.round_timeout_s, and the driver tells the coordinator when a group
has failed for good, so the other groups stop at once with that group's error.
"""
import contextlib
from dataclasses import dataclass, replace
from pathlib import Path

import ray
import ray.train
import torch

from launch.backends.coordinator import CoordinatorActor
from launch.backends.groups_resume import GroupStart, group_checkpoint_root, resume_point
from launch.backends.plan import population_controller, worker_plan
from launch.backends.ray_session import (ActorReporter, RayRun, RayTrainCheckpoints, fit_error, on_this_node,
                                         ray_trainer, run_on_ray)
from launch.spec.schema import JobSpec
from pbt.config import PBTConfig
from pbt.groups import GroupLayout, group_controller_state, plan_group_round
from pbt.hyperparams import HyperparamStore
from trainers.loop import Worker, WorkerPlan, replica_digest, say
from trainers.member_state import export_residual, export_shared, import_residual_, import_shared_
from trainers.rounds import NO_ROUNDS, training_is_over


# ---------------------------------------------------------------- inside a group's workers


@dataclass(frozen=True)
class GroupLink:
    """What a group's workers know of the whole population."""

    coordinator: object  # the CoordinatorActor's handle
    layout: GroupLayout
    group: int
    initial: dict[str, list[float]]  # every global member's initial hyperparameters (for summary.json)


class GroupReporter(ActorReporter):
    """Rows and events in global member ids; a restart rewinds only this group's members."""

    def __init__(self, recorder, link: GroupLink):
        super().__init__(recorder)
        self.link = link

    def log(self, rows):
        layout, group = self.link.layout, self.link.group
        super().log([{**row, "member": layout.global_id(group, row["member"]), "group": group} for row in rows])

    def rewind(self, step):
        self._call(self.recorder.rewind, step, self.link.layout.global_ids(self.link.group))

    def set_info(self, **info):
        super().set_info(**{**info, "members": self.link.layout.population, "groups": self.link.layout.groups,
                            "initial_hyperparams": self.link.initial})


class GroupCheckpoints(RayTrainCheckpoints):
    """Ray Train checkpoints that also tell the coordinator (rank 0), so it can drop states
    no restart will need. `start`: the run is resumed, and this group starts from the
    common step's checkpoint (launch/backends/groups_resume.py), not from the newest one
    Ray Train recorded for it, until it restarts from one of this driver's own."""

    def __init__(self, link: GroupLink, start: GroupStart | None = None):
        self.link, self.start = link, start

    @contextlib.contextmanager
    def latest(self):
        checkpoint = ray.train.get_checkpoint()
        # Ray Train's newest of this group may be past the common step, or (registered late) before it.
        if self.start is not None and (checkpoint is None
                                       or str(Path(checkpoint.path).resolve()) in self.start.earlier):
            yield self.start.folder
            return
        with super().latest() as folder:
            yield folder

    def earlier(self, latest: Path) -> list[Path]:
        # An earlier driver's other checkpoints would put this group at a step the others are not at.
        found = super().earlier(latest)
        if self.start is None:
            return found
        return [path for path in found if str(path.resolve()) not in self.start.earlier]

    def save(self, step, write_files):
        super().save(step, write_files)
        if ray.train.get_context().get_world_rank() == 0:
            self.link.coordinator.checkpoint.remote(self.link.group, step)


class GroupRounds:
    """The rounds of one group (trainers.contracts.PerturbationRounds; see the module
    docstring). A member whose loss turns non-finite between rounds waits for the next
    round, where it ranks worst and is always replaced: only the coordinator sees every
    group's scores. `store` is also the group's plan's `population`."""

    def __init__(self, link: GroupLink, schedule: PBTConfig, store: HyperparamStore):
        self.link, self.schedule, self.store = link, schedule, store

    def begin(self, worker: Worker) -> int:
        return worker.plan.train.steps

    def is_round(self, step: int) -> bool:
        return self.schedule.is_perturbation_step(step)

    @torch.no_grad()
    def after_step(self, worker: Worker, scores_P, bytes_report) -> None:
        if not self.is_round(worker.step) or training_is_over(worker):
            return
        link, model = self.link, worker.engine.module
        events, digests = ray.get(link.coordinator.decide.remote(
            worker.step, link.group, scores_P.tolist(), list(bytes_report.ratio_P),
            replica_digest(model).tolist()))
        round_ = plan_group_round(events, link.layout, link.group)
        for member in round_.exports:
            self._export(worker, member)
        for target, source in round_.local_copies:
            worker.copy_member(target=target, source=source)
        for target, source in round_.imports:
            self._import(worker, target, source)
        if not round_.events:
            return
        for event in round_.events:
            self.store.adopt(event, member=link.layout.locate(event.target)[1])
        worker.apply_hyperparams()
        if worker.reporter is not None:
            self._log_events(worker, round_.events, digests, replica_digest(model).tolist())

    def _export(self, worker: Worker, member: int) -> None:
        shared = (export_shared(worker.engine.module, worker.optimizer, member, worker.loss_scaler)
                  if worker.rank == 0 else None)
        ray.get(self.link.coordinator.offer.remote(worker.step, self.link.layout.global_id(self.link.group, member),
                                                   worker.rank, shared, export_residual(worker.exchange, member)))

    def _import(self, worker: Worker, target: int, source: int) -> None:
        shared, residual = ray.get(self.link.coordinator.collect.remote(worker.step, source, worker.rank))
        import_shared_(worker.engine.module, worker.optimizer, target, ray.get(shared), worker.loss_scaler)
        import_residual_(worker.exchange, target, ray.get(residual))

    def _log_events(self, worker: Worker, events, digests_before: list[float], digest_after_P: list[float]) -> None:
        layout, logged = self.link.layout, []
        for event in events:
            target = layout.locate(event.target)[1]
            logged.append(replace(event, digests={"source": digests_before[event.source],
                                                  "target": digest_after_P[target]}))
            say(f"[pbt] step {worker.step}: member {event.target} <- member {event.source} "
                f"(group {layout.locate(event.source)[0]} -> {self.link.group}, {event.reason}); "
                + event.explored())
        worker.reporter.log_events([event.to_json() for event in logged])


# ---------------------------------------------------------------- the driver


@ray.remote(num_cpus=0)
def fit_group(spec: JobSpec, loop_config: dict, run_dir: str, group: int) -> str | None:
    """One group's TorchTrainer.fit() (a task, so that the G fits run side by side); the
    error that ended it, or None. Resumed, the TorchTrainer of the same name finds Ray
    Train's record of the group's checkpoints."""
    return fit_error(ray_trainer(spec, loop_config, run_dir=Path(run_dir),
                                 name=group_checkpoint_root(Path(run_dir), group).name),
                     loop_config["reporter"].recorder)


def group_plan(spec: JobSpec, ds_config: dict, link: GroupLink, global_state: dict) -> WorkerPlan:
    """Group `link.group`'s WorkerPlan: its own seed, a store holding its members' slice of
    the global hyperparameters, and rounds decided by the coordinator."""
    store = HyperparamStore.from_state_dict(group_controller_state(global_state, link.layout, link.group))
    pbt = spec.population.pbt
    return replace(worker_plan(spec, ds_config), seed=spec.seed + link.group, population=store,
                   rounds=GroupRounds(link, pbt, store) if pbt else NO_ROUNDS)


def wait_for_groups(fits: dict, coordinator) -> list[str]:
    """Every group's end; a group that failed for good is reported to the coordinator at
    once, so that groups waiting for it at a round stop instead of timing out."""
    errors, pending = [], dict(fits)
    while pending:
        [done], _ = ray.wait(list(pending), num_returns=1)
        group = pending.pop(done)
        error = ray.get(done)
        if error is not None:
            errors.append(f"group {group}: {error}")
            ray.get(coordinator.fail.remote(group, error))
    return errors


def run_group_job(spec: JobSpec, *, resume: Path | None = None) -> Path:
    """The G groups' fits side by side, one run directory (or the run in `resume` continued,
    every group from the newest step all of them checkpointed)."""
    def fit(run: RayRun) -> str | None:
        # The coordinator and the fit tasks stay beside the recorder, on the driver's node.
        here = on_this_node()
        layout = GroupLayout(groups=spec.population.groups, members=spec.population.size)
        controller = population_controller(spec, members=layout.population)
        starts = [None] * layout.groups
        if run.resuming:
            point = resume_point(run.run_dir, layout)
            starts = point.starts
            if point.controller_state is not None:
                controller.load_state_dict(point.controller_state)
            print(f"resuming all {layout.groups} groups from step {point.step}, the newest step every group "
                  "checkpointed", flush=True)
        coordinator = CoordinatorActor.options(scheduling_strategy=here).remote(
            controller, layout, spec.population.round_timeout_s)
        global_state = controller.state_dict()
        fits = {}
        for group in range(layout.groups):
            link = GroupLink(coordinator, layout, group, initial=global_state["initial"])
            config = {"plan": group_plan(spec, run.ds_config, link, global_state),
                      "reporter": GroupReporter(run.recorder, link),
                      "checkpoints": GroupCheckpoints(link, starts[group])}
            fits[fit_group.options(scheduling_strategy=here).remote(spec, config, str(run.run_dir), group)] = group
        errors = wait_for_groups(fits, coordinator)
        return "; ".join(errors) if errors else None

    return run_on_ray(spec, fit, resume=resume)
