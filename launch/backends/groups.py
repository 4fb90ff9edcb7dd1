"""A Ray job of several vectorized groups (population.groups = G > 1): G Ray Train worker
groups at once, one PopulationCoordinator for their global PBT rounds (launch/backends/coordinator.py).

Same run directory as one group, except the checkpoints: `checkpoints_g{g}/` per group.
Group g trains its members with seed `seed + g` (initial weights, data order, dropout), so
the groups' members differ as members of one group do (group 0 starts from the weights a
one-group run with the same seed would). The global controller draws the G·P members'
initial hyperparameters; each group's HyperparamStore holds its slice.
"""
from dataclasses import replace
from pathlib import Path

import ray

from launch.backends.coordinator import CoordinatorActor, GroupLink, GroupRounds, group_train_worker
from launch.backends.plan import population_controller, worker_plan
from launch.backends.ray_session import RayRun, fit_error, on_this_node, ray_trainer, run_on_ray
from launch.spec.schema import JobSpec
from pbt.groups import GroupLayout, group_controller_state
from pbt.hyperparams import HyperparamStore
from trainers.loop import WorkerPlan
from trainers.rounds import NO_ROUNDS


@ray.remote(num_cpus=0)
def fit_group(spec: JobSpec, loop_config: dict, run_dir: str, group: int) -> str | None:
    """One group's TorchTrainer.fit() (a task, so that the G fits run side by side); the
    error that ended it, or None."""
    return fit_error(ray_trainer(spec, group_train_worker, loop_config, run_dir=Path(run_dir),
                                 name=f"checkpoints_g{group}"))


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


def run_group_job(spec: JobSpec) -> Path:
    """The G groups' fits side by side, one run directory."""
    def fit(run: RayRun) -> str | None:
        # The coordinator and the fit tasks stay beside the recorder, on the driver's node.
        here = on_this_node()
        layout = GroupLayout(groups=spec.population.groups, members=spec.population.size)
        controller = population_controller(spec, members=layout.population)
        coordinator = CoordinatorActor.options(scheduling_strategy=here).remote(
            controller, layout, spec.population.round_timeout_s)
        global_state = controller.state_dict()
        fits = {}
        for group in range(layout.groups):
            link = GroupLink(coordinator, layout, group, initial=global_state["initial"])
            config = {"plan": group_plan(spec, run.ds_config, link, global_state),
                      "recorder": run.recorder, "link": link}
            fits[fit_group.options(scheduling_strategy=here).remote(spec, config, str(run.run_dir), group)] = group
        errors = wait_for_groups(fits, coordinator)
        return "; ".join(errors) if errors else None

    return run_on_ray(spec, fit)
