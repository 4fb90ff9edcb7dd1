"""The PopulationCoordinator of several vectorized groups (population.groups = G): the
global PBT decisions and the groups' meeting point, an async actor beside the recorder.
How a round goes is in launch/backends/groups.py."""

import asyncio

import ray

from pbt.controller import PBTController
from pbt.groups import GroupLayout


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
