"""How the spec's `population.pbt` maps onto Ray Tune's `PopulationBasedTraining`
(`population.backend: tune`), in its Ray-free parts: the backend's spec rules (checked at
validation, without importing Ray), the trial config's keys, the explore clip. Ray's side:
pbt/ray/.

Each Tune trial is one member: its config holds `member` (the trial's index, fixed for
its life) and every hyperparameter of pbt.config.DOMAINS (the mutated ones and the
spec's values of the others, so an exploit's `old`/`new` are complete, as in the
vectorized backend's events). Initial values are the vectorized backend's seeded draw,
so the same spec and seed start the same population under either backend.

Where Ray's PBT and ours differ, the mapping makes Ray's behave like the spec says:
  - a range value perturbed by a factor is clipped to its range (Ray leaves it outside);
  - a choice is a plain list (Ray's categorical form: explore moves to a neighbour),
    not `tune.choice`, which Ray would multiply by a factor.
(pbt/ray/private_api.py keeps the target's `member`, which Ray copies from the donor.)
Ray draws its explore decisions from Python's global `random`, so unlike the vectorized
backend a Tune run's exploits are not reproducible from the seed.
"""
from collections.abc import Mapping

from pbt.config import Mutation, PopulationConfig

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


def clip_to_ranges(config: dict, mutations: Mapping[str, Mutation]) -> dict:
    """Ray's custom_explore_fn: a perturbed range value goes back into its range."""
    for name, mutation in mutations.items():
        if mutation.kind != "choice":
            low, high = mutation.values
            config[name] = min(max(config[name], low), high)
    return config


def trial_hyperparams(config: Mapping) -> dict[str, float]:
    return {name: float(value) for name, value in config.items() if name != MEMBER_KEY}
