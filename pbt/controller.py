"""The PBT controller of one population: exploit/explore decisions over its members'
hyperparameters.

Legend: P members.

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

from pbt.config import PBTConfig
from pbt.events import Event, finite_or_none
from pbt.hyperparams import HyperparamStore
from pbt.mutations import explore, sample_initial
from pbt.selection import penalized_scores, truncation_pairs

# Separate random streams (SeedSequence entropy words) for the initial draw and the rounds.
_INITIAL, _ROUND = 0, 1


class PBTController(HyperparamStore):
    """The decider: a store (pbt/hyperparams.py) whose values PBT draws and changes.
    `defaults` gives the value of every hyperparameter PBT does not mutate (e.g.
    {"lr": train.lr, "weight_decay": train.weight_decay, "warmup": warmup_steps / steps,
    "dropout": model.dropout, "density": compression.density}); mutated names are drawn
    per member from their mutation, seeded by `seed`."""

    def __init__(self, config: PBTConfig, *, members: int, seed: int,
                 defaults: Mapping[str, float] | None = None):
        self.config = config
        self._seed = seed % 2**64  # SeedSequence takes non-negative entropy
        drawn = sample_initial(config.hyperparam_mutations, members, self._rng(_INITIAL))
        super().__init__(members, defaults, drawn)

    def _rng(self, *words: int) -> np.random.Generator:
        return np.random.default_rng([self._seed, *words])

    def is_perturbation_step(self, step: int) -> bool:
        return self.config.is_perturbation_step(step)

    def nonfinite_members(self, scores_P: Sequence[float]) -> list[int]:
        """Members whose score is NaN or inf: `decide` replaces them at any step."""
        return [int(m) for m in np.flatnonzero(~np.isfinite(np.asarray(scores_P, dtype=np.float64)))]

    def decide(self, step: int, scores_P: Sequence[float],
               bytes_ratio_P: Sequence[float] | None = None) -> list[Event]:
        """Exploit/explore events for `step` (completed steps), already applied to the
        hyperparameters here; empty unless `step` is a perturbation step or some score is
        non-finite. `scores_P`: the config's metric per member, identical on all workers.
        `bytes_ratio_P`: bytes sent / dense bytes per member (needed when bytes_penalty > 0).
        Raises selection.PopulationDiverged when every score is non-finite."""
        c = self.config
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
