"""Sampling and exploring hyperparameters, as Ray Tune's PBT `_explore` does.

Every function takes an explicit `numpy.random.Generator`: the controller seeds it from
(seed, step), so every worker draws the same numbers without talking to the others.
Names are visited in sorted order so the draws do not depend on how the spec was written.

Differences from Ray Tune:
- a perturbed range value is clipped to its range (Ray lets `lr * 1.2` leave it; here
  a dropout could leave [0, 1));
- a choice value is located by closeness, not exact equality, so a value that went
  through float32 still finds its index.
"""
import math
from collections.abc import Mapping, Sequence

import numpy as np

from pbt.config import Mutation


def sample(mutation: Mutation, rng: np.random.Generator) -> float:
    """One draw from the mutation's distribution."""
    if mutation.kind == "choice":
        return float(mutation.values[rng.integers(len(mutation.values))])
    low, high = mutation.values
    if mutation.kind == "loguniform":
        return float(math.exp(rng.uniform(math.log(low), math.log(high))))
    return float(rng.uniform(low, high))


def sample_initial(mutations: Mapping[str, Mutation], members: int,
                   rng: np.random.Generator) -> dict[str, list[float]]:
    """Initial values per member: name -> [P] list, each member drawn independently."""
    return {name: [sample(mutations[name], rng) for _ in range(members)] for name in sorted(mutations)}


def explore(values: Mapping[str, float], mutations: Mapping[str, Mutation], *,
            resample_probability: float, perturbation_factors: Sequence[float],
            rng: np.random.Generator) -> tuple[dict[str, float], dict[str, str]]:
    """New hyperparameters from a donor's `values`, and what was done to each mutated name.

    Ranges: with `resample_probability` redraw, else multiply by a random factor and clip.
    Choices: with `resample_probability` (or when the value is not in the list) redraw,
    else move one place left or right, staying put at the ends (Ray's "shift ... (noop)").
    Names without a mutation are copied unchanged.
    """
    new = {name: float(v) for name, v in values.items()}
    operations = {}
    for name in sorted(mutations):
        mutation, value = mutations[name], float(values[name])
        if mutation.kind == "choice":
            index = _index_of(mutation.values, value)
            if rng.random() < resample_probability or index is None:
                new[name], operations[name] = sample(mutation, rng), "resample"
                continue
            shift = -1 if rng.integers(2) == 0 else 1
            moved = min(max(index + shift, 0), len(mutation.values) - 1)
            new[name] = float(mutation.values[moved])
            operations[name] = f"shift {'left' if shift < 0 else 'right'}{' (noop)' if moved == index else ''}"
        elif rng.random() < resample_probability:
            new[name], operations[name] = sample(mutation, rng), "resample"
        else:
            factor = float(perturbation_factors[rng.integers(len(perturbation_factors))])
            low, high = mutation.values
            perturbed = value * factor
            new[name] = min(max(perturbed, low), high)
            operations[name] = f"* {factor}{' (clipped)' if new[name] != perturbed else ''}"
    return new, operations


def _index_of(choices: Sequence[float], value: float) -> int | None:
    for index, choice in enumerate(choices):
        if math.isclose(choice, value, rel_tol=1e-6, abs_tol=1e-12):
            return index
    return None
