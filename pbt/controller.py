"""The PBT controller of one group: per-member hyperparameters and exploit/explore decisions.

Legend: P members in the group.

A decision is a pure function of (scores, step, seed, current hyperparameters): its
random numbers come from a private generator seeded with (seed, step), never the global
RNG, so every worker that passes the same all-reduced scores reaches the same decision
without a broadcast, and a run resumed from a checkpoint decides as the first one did.

The controller only decides. The worker applies each returned event: copy member
`source`'s state onto `target` in place (weights, optimizer moments and step counters,
error-feedback residual), then read the new hyperparameters back with
`hyperparams_tensor(name)`.
"""
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from pbt.config import DOMAINS, PBTConfig
from pbt.events import Event, finite_or_none
from pbt.mutations import explore, sample_initial
from pbt.selection import penalized_scores, truncation_pairs

# Separate random streams (SeedSequence entropy words) for the initial draw and the rounds.
_INITIAL, _ROUND = 0, 1


class PBTController:
    """`config=None` (population.pbt unset): every member keeps the spec's hyperparameters
    and no round ever happens. `defaults` gives the value of every hyperparameter PBT does not mutate (e.g.
    {"lr": train.lr, "weight_decay": train.weight_decay, "warmup": warmup_steps / steps,
    "dropout": model.dropout, "density": compression.density}); mutated names are drawn
    per member from their mutation, seeded by `seed`."""

    def __init__(self, config: PBTConfig | None, *, members: int, seed: int,
                 defaults: Mapping[str, float] | None = None):
        defaults = dict(defaults or {})
        unknown = sorted(set(defaults) - set(DOMAINS))
        if unknown:
            raise ValueError(f"unknown hyperparameter defaults {unknown}; valid names: {', '.join(DOMAINS)}")
        self.config, self.members = config, members
        self._seed = seed % 2**64  # SeedSequence takes non-negative entropy
        drawn = sample_initial(config.hyperparam_mutations, members, self._rng(_INITIAL)) if config else {}
        self.initial: dict[str, list[float]] = {
            **{name: [float(v)] * members for name, v in sorted(defaults.items())}, **drawn}
        self.hyperparams: dict[str, list[float]] = {k: list(v) for k, v in self.initial.items()}
        self.last_exploit_step: list[int] = [-1] * members  # -1: never exploited

    def _rng(self, *words: int) -> np.random.Generator:
        return np.random.default_rng([self._seed, *words])

    # ------------------------------------------------------------ queries

    def is_perturbation_step(self, step: int) -> bool:
        """A round after every `perturbation_interval` completed steps, from `burn_in` on."""
        c = self.config
        return c is not None and step > 0 and step >= c.burn_in and step % c.perturbation_interval == 0

    def nonfinite_members(self, scores_P: Sequence[float]) -> list[int]:
        """Members whose score is NaN or inf: `decide` replaces them at any step."""
        return [int(m) for m in np.flatnonzero(~np.isfinite(np.asarray(scores_P, dtype=np.float64)))]

    def member_hyperparams(self, member: int) -> dict[str, float]:
        return {name: values[member] for name, values in self.hyperparams.items()}

    def hyperparams_tensor(self, name: str, *, dtype: torch.dtype = torch.float32,
                           device: torch.device | str | None = None) -> torch.Tensor:
        """Hyperparameter `name` of every member as a [P] tensor."""
        if name not in self.hyperparams:
            raise KeyError(f"no hyperparameter {name!r}: it is neither mutated nor in defaults "
                           f"(known: {', '.join(self.hyperparams)})")
        return torch.tensor(self.hyperparams[name], dtype=dtype, device=device)

    # ------------------------------------------------------------ decisions

    def decide(self, step: int, scores_P: Sequence[float],
               bytes_ratio_P: Sequence[float] | None = None) -> list[Event]:
        """Exploit/explore events for `step` (completed steps), already applied to the
        hyperparameters here; empty unless `step` is a perturbation step or some score is
        non-finite. `scores_P`: the config's metric per member, identical on all workers.
        `bytes_ratio_P`: bytes sent / dense bytes per member (needed when bytes_penalty > 0).
        Raises selection.PopulationDiverged when every score is non-finite."""
        c = self.config
        if c is None:
            return []
        if len(scores_P) != self.members:
            raise ValueError(f"expected {self.members} scores (one per member), got {len(scores_P)}")
        score_P = penalized_scores(scores_P, mode=c.mode, bytes_penalty=c.bytes_penalty, bytes_ratio_P=bytes_ratio_P)
        round_due = self.is_perturbation_step(step)
        if not round_due and not self.nonfinite_members(score_P):
            return []
        rng = self._rng(_ROUND, step)
        pairs = truncation_pairs(score_P, mode=c.mode, quantile_fraction=c.quantile_fraction, rng=rng,
                                 nonfinite_only=not round_due)
        events = []
        for target, source in pairs:
            # Sources and targets are disjoint, so every source is read before any write.
            new, operations = explore(self.member_hyperparams(source), c.hyperparam_mutations,
                                      resample_probability=c.resample_probability,
                                      perturbation_factors=c.perturbation_factors, rng=rng)
            target_score = finite_or_none(score_P[target])
            events.append(Event(step=step, target=target, source=source,
                                reason="truncation" if target_score is not None else "nonfinite",
                                target_score=target_score, source_score=finite_or_none(score_P[source]),
                                old=self.member_hyperparams(target), new=new, operations=operations))
        for event in events:
            self.adopt(event)
        return events

    def adopt(self, event: Event, *, member: int | None = None) -> None:
        """Give `member` (default: the event's target) the event's new hyperparameters. A
        group of a larger population (population.groups > 1) adopts the coordinator's
        decisions this way, with its own index of the global target."""
        member = event.target if member is None else member
        for name, value in event.new.items():
            self.hyperparams[name][member] = value
        self.last_exploit_step[member] = event.step

    # ------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        """Lists and ints only, so `torch.load(weights_only=True)` reads it back."""
        return {"members": self.members, "initial": {k: list(v) for k, v in self.initial.items()},
                "hyperparams": {k: list(v) for k, v in self.hyperparams.items()},
                "last_exploit_step": list(self.last_exploit_step)}

    def load_state_dict(self, state: Mapping) -> None:
        if state["members"] != self.members or set(state["hyperparams"]) != set(self.hyperparams):
            raise ValueError(f"PBT state is for {state['members']} members and hyperparameters "
                             f"{sorted(state['hyperparams'])}, this controller has {self.members} and "
                             f"{sorted(self.hyperparams)}: the population or its mutations changed")
        self.initial = {k: [float(x) for x in v] for k, v in state["initial"].items()}
        self.hyperparams = {k: [float(x) for x in v] for k, v in state["hyperparams"].items()}
        self.last_exploit_step = [int(s) for s in state["last_exploit_step"]]
