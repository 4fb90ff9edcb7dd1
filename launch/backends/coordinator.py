"""Several vectorized groups (population.groups = G): one PBT population across G Ray Train
worker groups.

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
import asyncio
from dataclasses import dataclass, replace

import ray
import torch

from launch.backends.ray_session import ActorReporter, RayTrainCheckpoints
from pbt.config import PBTConfig
from pbt.controller import PBTController
from pbt.groups import GroupLayout, plan_group_round
from pbt.hyperparams import HyperparamStore
from trainers.loop import Worker, replica_digest, say
from trainers.member_state import export_residual, export_shared, import_residual_, import_shared_


class PopulationCoordinator:
    """The global PBT decisions and the meeting point of the groups (an async actor: its
    waits suspend, they do not block other calls)."""

    def __init__(self, controller: PBTController, layout: GroupLayout, timeout_s: float):
        self.controller, self.layout, self.timeout_s = controller, layout, timeout_s
        self.reports: dict[int, dict[int, tuple]] = {}  # step -> group -> (scores, bytes ratios, digests)
        # step -> (events, digest of every member), or the error deciding raised
        self.decided: dict[int, tuple[list, list[float]] | Exception] = {}
        self.offers: dict[tuple[int, int], dict] = {}  # (step, global source) -> {"shared": ref, rank: ref}
        self.checkpointed: dict[int, list[int]] = {}  # group -> steps of its last two checkpoints
        self.forgotten_through = 0  # rounds up to this step are forgotten
        self.failed: dict[int, str] = {}  # group -> error, for groups the driver saw fail for good
        self.changed = asyncio.Condition()

    async def decide(self, step: int, group: int, scores_P: list[float], bytes_ratio_P: list[float],
                     digest_P: list[float]):
        """(events, digest per global member) of the round at `step`, once all groups reported it."""
        if step <= self.forgotten_through:
            raise RuntimeError(f"group {group} replays the PBT round at step {step}, which the coordinator has "
                               f"forgotten (every group checkpointed at or after step {self.forgotten_through})")
        async with self.changed:
            if step not in self.decided:
                reports = self.reports.setdefault(step, {})
                reports[group] = (scores_P, bytes_ratio_P, digest_P)
                if len(reports) == self.layout.groups:
                    self._decide(step, [reports[g] for g in range(self.layout.groups)])
                    self.changed.notify_all()
            await self._wait_until(lambda: step in self.decided,
                                   lambda: f"groups {sorted(set(range(self.layout.groups)) - set(self.reports[step]))} "
                                           f"to reach the PBT round at step {step}")
        if isinstance(self.decided[step], Exception):
            raise self.decided[step]
        return self.decided[step]

    def _decide(self, step: int, reports: list[tuple]) -> None:
        scores, ratios, digests = ([x for report in reports for x in report[part]] for part in range(3))
        try:
            self.decided[step] = (self.controller.decide(step, scores, bytes_ratio_P=ratios), digests)
        except Exception as err:  # noqa: BLE001 - e.g. PopulationDiverged: every group must hear it, not only this one
            self.decided[step] = err
        del self.reports[step]

    async def offer(self, step: int, source: int, rank: int, shared: dict | None, residual: dict) -> None:
        """A donor's state: the shared part (from rank 0; None from the others) and rank
        `rank`'s residuals. A replayed round's offer is dropped: the first one is the state
        the round saw."""
        async with self.changed:
            offer = self.offers.setdefault((step, source), {})
            if shared is not None and "shared" not in offer:
                offer["shared"] = ray.put(shared)
            if rank not in offer:
                offer[rank] = ray.put(residual)
            self.changed.notify_all()

    async def collect(self, step: int, source: int, rank: int) -> list:
        """[shared ref, rank `rank`'s residual ref] of member `source` at the round `step`."""
        def ready():
            offer = self.offers.get((step, source), {})
            return "shared" in offer and rank in offer

        async with self.changed:
            await self._wait_until(ready, lambda: f"member {source}'s state of the round at step {step} (rank {rank})")
            offer = self.offers[(step, source)]
            return [offer["shared"], offer[rank]]

    def checkpoint(self, group: int, step: int) -> None:
        """Group `group` checkpointed at `step`. Ray Train registers a reported checkpoint
        asynchronously, so a worker dying just after reporting one may restart from the one
        before: a group replays rounds after the older of its last two checkpoints at most,
        and what every group is past that way can go."""
        # A checkpoint at or before the last one means the group restarted and replays: drop what came after.
        self.checkpointed[group] = ([done for done in self.checkpointed.get(group, []) if done < step] + [step])[-2:]
        lasts = list(self.checkpointed.values())
        if len(lasts) == self.layout.groups and all(len(two) == 2 for two in lasts):
            self.forgotten_through = min(two[0] for two in lasts)
            self.offers = {key: offer for key, offer in self.offers.items() if key[0] > self.forgotten_through}
            self.decided = {at: decided for at, decided in self.decided.items() if at > self.forgotten_through}

    async def fail(self, group: int, error: str) -> None:
        """The driver saw group `group` fail for good: wake every waiter, which then raises."""
        async with self.changed:
            self.failed[group] = error
            self.changed.notify_all()

    async def _wait_until(self, ready, what) -> None:
        try:
            await asyncio.wait_for(self.changed.wait_for(lambda: ready() or self.failed), self.timeout_s)
        except asyncio.TimeoutError:
            raise TimeoutError(
                f"waited population.round_timeout_s = {self.timeout_s:g} s for {what()}: a group is stuck, "
                "failed or restarting from its checkpoint; raise round_timeout_s if restarts take longer") from None
        if not ready():
            raise RuntimeError(f"group(s) {sorted(self.failed)} failed, so the population cannot go on: "
                               + "; ".join(f"group {g}: {error}" for g, error in sorted(self.failed.items())))


# The driver pins it to its own node, like the recorder.
CoordinatorActor = ray.remote(num_cpus=0, max_concurrency=1000)(PopulationCoordinator)


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
        self.recorder.rewind.remote(step, self.link.layout.global_ids(self.link.group))

    def set_info(self, **info):
        super().set_info(**{**info, "members": self.link.layout.population, "groups": self.link.layout.groups,
                            "initial_hyperparams": self.link.initial})


class GroupCheckpoints(RayTrainCheckpoints):
    """Ray Train checkpoints that also tell the coordinator (rank 0), so it can drop states
    no restart will need."""

    def __init__(self, link: GroupLink, rank: int):
        self.link, self.rank = link, rank

    def save(self, step, write_files):
        super().save(step, write_files)
        if self.rank == 0:
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
        if not self.is_round(worker.step):
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
        shared = export_shared(worker.engine.module, worker.optimizer, member) if worker.rank == 0 else None
        ray.get(self.link.coordinator.offer.remote(worker.step, self.link.layout.global_id(self.link.group, member),
                                                   worker.rank, shared, export_residual(worker.exchange, member)))

    def _import(self, worker: Worker, target: int, source: int) -> None:
        shared, residual = ray.get(self.link.coordinator.collect.remote(worker.step, source, worker.rank))
        import_shared_(worker.engine.module, worker.optimizer, target, ray.get(shared))
        import_residual_(worker.exchange, target, ray.get(residual))

    def _log_events(self, worker: Worker, events, digests_before: list[float], digest_after_P: list[float]) -> None:
        layout, logged = self.link.layout, []
        for event in events:
            target = layout.locate(event.target)[1]
            logged.append(replace(event, digests={"source": digests_before[event.source],
                                                  "target": digest_after_P[target]}))
            say(f"[pbt] step {worker.step}: member {event.target} <- member {event.source} "
                f"(group {layout.locate(event.source)[0]} -> {self.link.group}, {event.reason}); "
                + ", ".join(f"{k} {v:.3g}" for k, v in event.new.items()))
        worker.reporter.log_events([event.to_json() for event in logged])


def group_train_worker(config: dict) -> None:
    """Ray Train's `train_loop_per_worker` for one group:
    `config = {"plan": WorkerPlan, "recorder": actor, "link": GroupLink}`."""
    import ray.train

    context, link = ray.train.get_context(), config["link"]
    rank = context.get_world_rank()
    Worker(config["plan"], rank=rank, world_size=context.get_world_size(),
           reporter=GroupReporter(config["recorder"], link), checkpoints=GroupCheckpoints(link, rank)).run()
