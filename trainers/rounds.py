"""PBT rounds inside one group of members (trainers.contracts.PerturbationRounds): none, or
decided by the group's own controller. Several groups and Ray Tune have theirs in launch/."""
from typing import Protocol

import torch

from trainers.loop import Worker, say


class NoRounds:
    """Members train independently to train.steps (no population.pbt)."""

    def begin(self, worker: Worker) -> int:
        return worker.plan.train.steps

    def is_round(self, step: int) -> bool:
        return False

    def after_step(self, worker: Worker, scores_P, bytes_report) -> None:
        pass


class Decider(Protocol):
    """pbt.controller.PBTController, as seen from here."""

    def is_perturbation_step(self, step: int) -> bool: ...

    def decide(self, step: int, scores_P: list[float], bytes_ratio_P: list[float]) -> list:
        """pbt.events.Event's, already adopted by the members' hyperparameters."""


def training_is_over(worker: Worker) -> bool:
    """No round after the last step: a copy then would leave the final table mixing copied
    weights with losses measured before the copy (Ray Tune, too, stops a trial before PBT
    sees its last result)."""
    return worker.step >= worker.plan.train.steps


class LocalRounds(NoRounds):
    """The group's controller decides, on every worker alike: the scores are all-reduced and
    its random numbers seeded by (seed, step). A member whose score turns non-finite is
    replaced at once, between rounds too (not after the last step). The controller is also
    the plan's `population`: the hyperparameters it changes are the ones the loop reads.
    The run begins as without rounds: to train.steps."""

    def __init__(self, controller: Decider):
        self.controller = controller

    def is_round(self, step: int) -> bool:
        return self.controller.is_perturbation_step(step)

    @torch.no_grad()
    def after_step(self, worker: Worker, scores_P, bytes_report) -> None:
        if training_is_over(worker):
            return
        events = self.controller.decide(worker.step, scores_P.tolist(), bytes_ratio_P=list(bytes_report.ratio_P))
        if not events:
            return
        for event in events:
            worker.copy_member(target=event.target, source=event.source)
        worker.apply_hyperparams()
        if worker.reporter is not None:
            worker.reporter.log_events([event.to_json() for event in events])
            for event in events:
                say(f"[pbt] step {worker.step}: member {event.target} <- member {event.source} ({event.reason}); "
                    + event.explored())


NO_ROUNDS = NoRounds()
