"""The spec's `population.pbt` as Ray Tune's `PopulationBasedTraining` (`population.backend: tune`).

Each Tune trial is one member: its config holds `member` (the trial's index, fixed for
its life) and every hyperparameter of pbt.config.DOMAINS (the mutated ones and the
spec's values of the others, so an exploit's `old`/`new` are complete, as in the
vectorized backend's events). Initial values are the vectorized backend's seeded draw,
so the same spec and seed start the same population under either backend.

Where Ray's PBT and ours differ, the mapping makes Ray's behave like the spec says:
  - a range value perturbed by a factor is clipped to its range (Ray leaves it outside);
  - a choice is a plain list (Ray's categorical form: explore moves to a neighbour),
    not `tune.choice`, which Ray would multiply by a factor.
(pbt/tune_scheduler.py keeps the target's `member`, which Ray copies from the donor.)
Ray draws its explore decisions from Python's global `random`, so unlike the vectorized
backend a Tune run's exploits are not reproducible from the seed.
"""
import functools
from collections.abc import Mapping

from pbt.config import Mutation, PBTConfig, PopulationConfig

MEMBER_KEY = "member"
TIME_ATTR = "step"  # what the trials report, and what perturbation_interval counts


def tune_backend_problems(population: PopulationConfig, *, launcher: str) -> list[tuple[str, str]]:
    """(dotted key, message) for every setting the tune backend cannot honour, and for
    tune-only settings used with the vectorized backend."""
    pbt = population.pbt
    if population.backend == "vectorized":
        if pbt is not None and pbt.synch:
            return [("population.pbt.synch", "only meaningful with population.backend: tune (Ray Tune's "
                     "synchronous PBT); the vectorized backend's rounds are always synchronous (every member "
                     "steps together): remove it, or set population.backend: tune")]
        return []
    problems = []
    if pbt is None:
        problems.append(("population.pbt", "population.backend: tune schedules trials with Ray Tune's "
                         "PopulationBasedTraining: add population.pbt (perturbation_interval, "
                         "hyperparam_mutations), or use backend: vectorized for independent members"))
    if population.size < 2:
        problems.append(("population.size", f"backend tune runs one trial per member and needs at least 2 "
                         f"(got {population.size}); raise population.size"))
    if population.groups != 1:
        problems.append(("population.groups", "groups are vectorized models; with backend tune every trial is "
                         "one plain model: remove population.groups (or use backend: vectorized)"))
    if launcher != "ray":
        problems.append(("distributed.launcher", "backend tune runs every trial as a Ray Train job: use "
                         "launcher: ray (or backend: vectorized under mpiexec)"))
    if pbt is not None and "density" in pbt.hyperparam_mutations:
        problems.append(("population.pbt.hyperparam_mutations.density", "mutating the compression density is "
                         "not supported with backend tune: remove it (set compression.density)"))
    if pbt is not None and pbt.bytes_penalty:
        problems.append(("population.pbt.bytes_penalty", "backend tune ranks trials by the metric alone: remove "
                         "bytes_penalty (or use backend: vectorized)"))
    return problems


def tune_domain(mutation: Mutation):
    """Ray Tune's form of one mutation: tune.loguniform / tune.uniform for ranges, a plain
    list for a choice."""
    from ray import tune

    if mutation.kind == "choice":
        return list(mutation.values)
    low, high = mutation.values
    return tune.loguniform(low, high) if mutation.kind == "loguniform" else tune.uniform(low, high)


def clip_to_ranges(config: dict, mutations: Mapping[str, Mutation]) -> dict:
    """Ray's custom_explore_fn: a perturbed range value goes back into its range."""
    for name, mutation in mutations.items():
        if mutation.kind != "choice":
            low, high = mutation.values
            config[name] = min(max(config[name], low), high)
    return config


def scheduler_kwargs(pbt: PBTConfig) -> dict:
    """Keyword arguments of `PopulationBasedTraining` for the spec's pbt section."""
    mutations = dict(pbt.hyperparam_mutations)
    return {
        "time_attr": TIME_ATTR,
        "metric": pbt.metric,
        "mode": pbt.mode,
        "perturbation_interval": pbt.perturbation_interval,
        "burn_in_period": pbt.burn_in,
        "hyperparam_mutations": {name: tune_domain(m) for name, m in mutations.items()},
        "quantile_fraction": pbt.quantile_fraction,
        "resample_probability": pbt.resample_probability,
        "perturbation_factors": tuple(pbt.perturbation_factors),
        "custom_explore_fn": functools.partial(clip_to_ranges, mutations=mutations),
        "synch": pbt.synch,
    }


def param_space(initial: Mapping[str, list[float]]) -> dict:
    """One trial per member: `member` is a grid over 0..P-1 and each hyperparameter is
    that member's initial value (initial: name -> [P], as PBTController.initial)."""
    from ray import tune

    members = len(next(iter(initial.values())))
    space = {MEMBER_KEY: tune.grid_search(list(range(members)))}
    for name, values in initial.items():
        space[name] = tune.sample_from(lambda config, values=tuple(values): values[config[MEMBER_KEY]])
    return space


def trial_hyperparams(config: Mapping) -> dict[str, float]:
    return {name: float(value) for name, value in config.items() if name != MEMBER_KEY}
